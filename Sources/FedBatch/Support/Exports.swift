// The native layer (files, directories, hashing, gpgme, libarchive, zstd,
// BLAS, buffers) is part of fedbatch's library API: its types (FileError,
// Digest, OpenFile, NumericBuffer, …) appear throughout. Its C modules are
// imported `internal` there and are not re-exported.
@_exported import FedBatchNative
