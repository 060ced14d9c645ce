internal import CZlib
import Foundation

// Every call into zlib lives in this file: reading .gz data files (the IDX
// files Debian ships are gzip-compressed), capped in size.

/// Reads a file, decompressing it if it is gzip (zlib reads plain files as
/// they are). Stops with an error past `cap` bytes of output.
public func readMaybeGzip(_ path: String, cap: Int64) throws -> Data {
    guard let gz = gzopen(path, "rb") else { throw FileError.errno(path, "cannot open") }
    defer { gzclose(gz) }
    gzbuffer(gz, 1 << 17)
    var out = Data()
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let n = chunk.withUnsafeMutableBytes { gzread(gz, $0.baseAddress, UInt32($0.count)) }
        if n < 0 {
            var code: Int32 = 0
            let msg = gzerror(gz, &code).map { String(cString: $0) } ?? "read error"
            throw FileError(path: path, message: "corrupt or truncated gzip data: \(msg)")
        }
        if n == 0 { break }
        out.append(contentsOf: chunk[0..<Int(n)])
        if Int64(out.count) > cap { throw FileError(path: path, message: "decompresses to more than \(cap) bytes") }
    }
    // gzread returns 0 both at a clean end and at a truncated stream; gzeof
    // plus a final error check tells them apart.
    var code: Int32 = 0
    _ = gzerror(gz, &code)
    if code != Z_OK && code != Z_STREAM_END {
        throw FileError(path: path, message: "corrupt or truncated gzip data")
    }
    return out
}
