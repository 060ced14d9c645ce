import Foundation

#if canImport(Glibc)
import Glibc
#endif

// Raw process calls: creating private temp directories and running a helper
// program to completion (gpgconf, to stop the agents of scratch keyrings).

/// Creates a private directory under /tmp with a short name: gpg-agent
/// puts its sockets inside a GnuPG home, and a socket path must stay under
/// 108 bytes.
public func makePrivateTempDirectory(prefix: String = "fb-") throws -> String {
    var template = Array("\(temporaryRoot)/\(prefix)XXXXXX".utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
        throw FileError.errno(temporaryRoot, "cannot create a temporary directory")
    }
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// Where temporary directories go: $TMPDIR when it names an absolute
/// path, else /tmp.
public var temporaryRoot: String {
    if let dir = ProcessInfo.processInfo.environment["TMPDIR"], dir.hasPrefix("/"), dir.count > 1 {
        return dir.hasSuffix("/") ? String(dir.dropLast()) : dir
    }
    return "/tmp"
}

/// Makes a spawned program inherit no descriptor above stderr.
///
/// gpgme opens its pipes to gpg without close-on-exec. A program spawned
/// while another thread talks to gpg would inherit them, and as long as it
/// (or a daemon it starts, such as gpg-agent) lives, that gpg never sees end
/// of file on its input and the gpgme call never returns, holding the fork
/// guard. glibc 2.34's posix_spawn_file_actions_addclosefrom_np closes
/// them in the child; Swift's Glibc module does not declare it, so it is
/// looked up by name.
public func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let libc = dlopen(nil, RTLD_LAZY), let symbol = dlsym(libc, "posix_spawn_file_actions_addclosefrom_np")
    else { return }
    _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
}

/// Runs a program found on PATH with stdio closed, and waits for it.
@discardableResult
public func runQuietly(_ program: String, _ arguments: [String]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for fd in Int32(0)...2 {
        posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    closeInheritedDescriptors(&actions)
    let argv = ([program] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawnp(&pid, program, &actions, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

/// Replaces this process with a fresh run of the same binary and arguments,
/// with `name=value` added to the environment. Returns only if exec fails.
public func reexecuteSelf(setting name: String, to value: String) {
    setenv(name, value, 1)
    let args = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", args)
    args.forEach { free($0) }
}

/// Whether a process with this id exists (it may belong to another user).
public func processExists(_ pid: Int32) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}
