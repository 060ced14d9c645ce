import FedBatchNative
import Foundation

/// The reason code of any error: its own, `io.error` for a file-system
/// error Foundation raised (FileManager's moves and copies), or a generic
/// one.
public func reasonCode(of error: Error) -> String {
    if let coded = error as? ReasonCoded { return coded.code }
    let ns = error as NSError
    if ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain { return "io.error" }
    return "error"
}

/// An error in words a site administrator can act on. Foundation's file
/// errors print as `Error Domain=NSCocoaErrorDomain Code=512 "(null)"`; this
/// says which file and what the system said instead.
public func describe(_ error: Error) -> String {
    if error is ReasonCoded { return "\(error)" }
    let ns = error as NSError
    guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return "\(error)" }
    let path = (ns.userInfo[NSFilePathErrorKey] as? String) ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path
    var reason: String?
    if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
        reason = systemErrorDescription(Int32(underlying.code))
    } else if ns.domain == NSPOSIXErrorDomain {
        reason = systemErrorDescription(Int32(ns.code))
    }
    let what: String
    switch ns.code {
    case NSFileNoSuchFileError, NSFileReadNoSuchFileError: what = "no such file or directory"
    case NSFileWriteFileExistsError: what = "already exists"
    case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: what = "permission denied"
    case NSFileWriteOutOfSpaceError: what = "no space left on the device"
    case NSFileWriteVolumeReadOnlyError: what = "the file system is read-only"
    default: what = reason ?? "a file-system operation failed (error \(ns.code))"
    }
    let detail = reason.map { $0.lowercased() == what ? "" : " (\($0))" } ?? ""
    return (path.map { "\($0): " } ?? "") + what + detail
}
