internal import CZstd
import Foundation

// Every call into libzstd lives in this file. Callers see byte buffers and
// `ZstdError`; nothing outside this file touches a ZSTD_* handle.

/// A failure reported by libzstd, or a limit fedbatch imposes on its output.
public enum ZstdError: Error, Equatable, Sendable {
    /// The frame asks for a larger back-reference window than allowed.
    case windowTooLarge(limitLog: Int)
    /// The frame decodes to more bytes than the configured cap.
    case outputTooLarge(cap: Int64)
    /// The input ended inside a frame.
    case truncated
    /// Bytes follow the end of the (single) zstd frame.
    case trailingData(bytes: Int)
    /// The input is not a zstd frame at all.
    case notZstd
    /// Any other libzstd error, with its own message.
    case library(String)
}

extension ZstdError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .windowTooLarge(let log):
            return
                "the zstd frame needs a window larger than \(1 << log) bytes (limit 2^\(log)); refusing to allocate it"
        case .outputTooLarge(let cap):
            return "the zstd frame expands beyond the cap of \(cap) bytes"
        case .truncated:
            return "the zstd frame is truncated: the input ends before the frame does"
        case .trailingData(let n):
            return "\(n) bytes follow the end of the zstd frame"
        case .notZstd:
            return "the payload does not start with a zstd frame"
        case .library(let message):
            return "zstd: \(message)"
        }
    }
}

private func zstdCheck(_ code: Int) throws -> Int {
    if ZSTD_isError(code) != 0 {
        throw ZstdError.library(String(cString: ZSTD_getErrorName(code)))
    }
    return code
}

/// Streaming zstd compressor with fixed parameters, so that the same input
/// gives the same bytes on every run with the same libzstd.
///
/// It compresses on two worker threads. zstd's multi-threaded output
/// differs from its single-threaded output, but in streaming mode it is the
/// same for any number of workers of one or more (zstd issues #2238 and
/// #2327), so a collector with 2 cores and one with 64 write the same
/// generation. A libzstd built without threads cannot make those bytes, so
/// it is refused rather than silently writing others.
public final class ZstdEncoder {
    private let ctx: OpaquePointer
    private var out = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
    private let sink: (UnsafeRawBufferPointer) throws -> Void

    public init(level: Int32, sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let ctx = ZSTD_createCCtx() else { throw ZstdError.library("cannot allocate a compression context") }
        self.ctx = ctx
        self.sink = sink
        _ = try zstdCheck(ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, level))
        _ = try zstdCheck(ZSTD_CCtx_setParameter(ctx, ZSTD_c_checksumFlag, 1))
        if ZSTD_isError(ZSTD_CCtx_setParameter(ctx, ZSTD_c_nbWorkers, 2)) != 0 {
            ZSTD_freeCCtx(ctx)
            throw ZstdError.library(
                "this libzstd has no multi-threaded compression, which fedbatch's reproducible output needs")
        }
    }

    deinit { ZSTD_freeCCtx(ctx) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var input = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while input.pos < input.size {
            try drain(&input, ZSTD_e_continue)
        }
    }

    public func finish() throws {
        var input = ZSTD_inBuffer(src: nil, size: 0, pos: 0)
        var remaining = 1
        while remaining != 0 {
            remaining = try drain(&input, ZSTD_e_end)
        }
    }

    @discardableResult
    private func drain(_ input: inout ZSTD_inBuffer, _ mode: ZSTD_EndDirective) throws -> Int {
        try out.withUnsafeMutableBytes { buf in
            var output = ZSTD_outBuffer(dst: buf.baseAddress, size: buf.count, pos: 0)
            let r = try zstdCheck(ZSTD_compressStream2(ctx, &output, &input, mode))
            if output.pos > 0 { try sink(UnsafeRawBufferPointer(rebasing: buf[0..<output.pos])) }
            return r
        }
    }
}

/// Streaming decoder for exactly one zstd frame, held in memory or pulled
/// from a source a piece at a time, with a window limit (refuses frames that
/// would make it allocate a huge history buffer) and an output cap (stops
/// decompression bombs while memory stays flat).
public final class ZstdDecoder {
    private let ctx: OpaquePointer
    /// The compressed bytes not yet consumed start at `inputPos`.
    private var input: Data
    private var inputPos = 0
    /// Gives up to `n` more compressed bytes; empty at the end.
    private let pull: (Int) throws -> Data
    private var sourceDone = false
    private let outputCap: Int64
    private let windowLogMax: Int
    private(set) var produced: Int64 = 0
    private var frameDone = false

    /// A decoder of a frame held in memory, which it reads in place.
    public convenience init(frame: Data, windowLogMax: Int, outputCap: Int64) throws {
        try self.init(windowLogMax: windowLogMax, outputCap: outputCap, input: frame) { _ in Data() }
    }

    /// A decoder pulling its input from `pull` (up to n bytes per call,
    /// empty at the end): a payload read from disk as it is decompressed.
    public convenience init(windowLogMax: Int, outputCap: Int64, pull: @escaping (Int) throws -> Data) throws {
        try self.init(windowLogMax: windowLogMax, outputCap: outputCap, input: Data(), pull: pull)
    }

    private init(windowLogMax: Int, outputCap: Int64, input: Data, pull: @escaping (Int) throws -> Data) throws {
        guard let ctx = ZSTD_createDCtx() else { throw ZstdError.library("cannot allocate a decompression context") }
        self.ctx = ctx
        self.pull = pull
        self.input = input
        self.outputCap = outputCap
        self.windowLogMax = windowLogMax
        _ = try zstdCheck(ZSTD_DCtx_setParameter(ctx, ZSTD_d_windowLogMax, Int32(windowLogMax)))
        // Only standard frames: a skippable or legacy frame inside the payload is refused.
        try refill(atLeast: 4)
        let held = self.input
        let magic: UInt32 =
            held.count >= 4 ? held.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian : 0
        if magic != 0xFD2F_B528 { throw ZstdError.notZstd }
    }

    deinit { ZSTD_freeDCtx(ctx) }

    /// Pulls until at least `count` unconsumed bytes are held or the source
    /// ends.
    private func refill(atLeast count: Int = 1) throws {
        if inputPos > 0 && inputPos == input.count {
            input = Data()
            inputPos = 0
        }
        while !sourceDone && input.count - inputPos < count {
            let more = try pull(1 << 17)
            if more.isEmpty { sourceDone = true } else { input.append(more) }
        }
    }

    /// Fills `buffer` with the next decompressed bytes; returns 0 at the end
    /// of the frame. Throws if the frame is truncated, followed by other
    /// bytes, needs too large a window, or expands past the cap.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if frameDone || buffer.count == 0 { return 0 }
        var written = 0
        while written == 0 && !frameDone {
            try refill()
            let (r, consumed, out) = input.withUnsafeBytes { src in
                var inBuf = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: inputPos)
                var outBuf = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
                let r = ZSTD_decompressStream(ctx, &outBuf, &inBuf)
                return (r, inBuf.pos, outBuf.pos)
            }
            if ZSTD_isError(r) != 0 {
                if ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge {
                    throw ZstdError.windowTooLarge(limitLog: windowLogMax)
                }
                throw ZstdError.library(String(cString: ZSTD_getErrorName(r)))
            }
            let progressed = consumed > inputPos || out > 0
            inputPos = consumed
            written = out
            produced += Int64(written)
            if produced > outputCap { throw ZstdError.outputTooLarge(cap: outputCap) }
            if r == 0 {
                frameDone = true
                // Whatever is left, held or still at the source, is trailing.
                var trailing = input.count - inputPos
                while !sourceDone {
                    let more = try pull(1 << 17)
                    if more.isEmpty { sourceDone = true } else { trailing += more.count }
                    if trailing > 0 { break }
                }
                if trailing > 0 { throw ZstdError.trailingData(bytes: trailing) }
            } else if written == 0 && inputPos == input.count && sourceDone {
                throw ZstdError.truncated
            } else if !progressed && inputPos == input.count {
                // zstd wants more input than is held: loop to pull it.
                continue
            }
        }
        return written
    }
}
