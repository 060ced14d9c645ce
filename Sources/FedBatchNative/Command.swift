import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a command run by `runShellCommand` ended.
public enum CommandEnd: Sendable, Equatable {
    case exited(Int32)
    case signalled(Int32)
    /// It ran past its time and its process group was killed.
    case timedOut
}

/// Runs `/bin/sh -c command` in `directory`, with `environment` added to
/// this process's, stdin from /dev/null and stdout and stderr appended to
/// the file `log`; waits for it and returns how it ended.
///
/// The command runs in a process group of its own, with the default
/// signal dispositions and an empty signal mask (whatever this process
/// inherited), so that the whole group can be stopped: after `timeout`
/// seconds it gets SIGTERM, and SIGKILL `grace` seconds later. When the
/// command itself has ended, whatever it left running in its group is
/// killed too: a trainer's stray worker must not outlive the run that
/// started it. posix_spawn runs no fork handlers, so this never disturbs
/// a BLAS call in flight (see ForkGuard).
public func runShellCommand(
    _ command: String, directory: String, environment: [String: String], log: String, timeout: Double?,
    grace: Double = 5
) throws -> CommandEnd {
    let logFD = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
    if logFD < 0 { throw FileError.errno(log, "cannot open the command's log") }
    defer { close(logFD) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, logFD, 1)
    posix_spawn_file_actions_adddup2(&actions, logFD, 2)
    // The command inherits nothing else: not the home's lock, and not a
    // pipe some library opened without close-on-exec, which a stray
    // process of the command could hold open for as long as it lives.
    closeInheritedDescriptors(&actions)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var none = sigset_t()
    sigemptyset(&none)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigmask(&attributes, &none)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setpgroup(&attributes, 0)
    posix_spawnattr_setflags(
        &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    // The outer shell enters the directory and replaces itself with the
    // user's: glibc's addchdir action is not visible from Swift.
    let words: [String] = ["/bin/sh", "-c", "cd -- \"$0\" || exit 126\nexec /bin/sh -c \"$1\"", directory, command]
    let argv = words.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, envp)
    guard spawned == 0 else {
        throw FileError(path: "/bin/sh", message: "cannot start the command: \(String(cString: strerror(spawned)))")
    }

    let start = monotonicSeconds()
    var status: Int32 = 0
    var end: CommandEnd?
    var terminatedAt: Double?
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { break }
        if r < 0 && errno != EINTR { break }
        let now = monotonicSeconds()
        if let timeout, now - start >= timeout, terminatedAt == nil {
            end = .timedOut
            terminatedAt = now
            kill(-pid, SIGTERM)
        }
        if let t = terminatedAt, now - t >= grace { kill(-pid, SIGKILL) }
        usleep(20_000)
    }
    // Whatever the group still holds goes with the command; wait (a bounded
    // time) until the kernel has it gone, so no process outlives the run.
    kill(-pid, SIGKILL)
    let deadline = monotonicSeconds() + 10
    while kill(-pid, 0) == 0 && monotonicSeconds() < deadline { usleep(10_000) }
    if let end { return end }
    if status & 0x7F == 0 { return .exited((status >> 8) & 0xFF) }
    return .signalled(status & 0x7F)
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Whether any process of the process group `pgid` is left.
public func processGroupExists(_ pgid: Int32) -> Bool {
    kill(-pgid, 0) == 0 || errno == EPERM
}
