//! Child processes that never outlive the test binary.
//!
//! Every process is started from one long-lived thread with `PR_SET_PDEATHSIG`, so the kernel
//! kills it when that thread ends, which only happens when the test binary exits: normally,
//! after a panic, or killed. On a normal exit an `atexit` handler also kills and reaps them and
//! removes the directories registered for removal.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

struct Supervisor {
    requests: Mutex<mpsc::Sender<SpawnRequest>>,
}

/// Process ids still to kill at exit, and directories to remove after that.
static AT_EXIT: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

fn supervisor() -> &'static Supervisor {
    static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();
    SUPERVISOR.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-supervisor".into())
            // The parent-death signal follows the thread that forked: this one lives as long
            // as the process, because it waits on a channel whose sender is never dropped.
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(spawn_here(&mut command));
                }
            })
            .expect("start the process supervisor thread");
        // SAFETY: `kill_children_at_exit` is a plain `extern "C" fn` without arguments.
        unsafe { libc::atexit(kill_children_at_exit) };
        Supervisor {
            requests: Mutex::new(requests),
        }
    })
}

fn spawn_here(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl, getppid and kill are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    AT_EXIT.lock().unwrap().0.push(child.id());
    Ok(child)
}

/// A child process that dies with the test binary at the latest, and when dropped.
pub struct Supervised {
    child: Child,
}

impl Supervised {
    /// Starts `command` through the supervisor thread.
    pub fn spawn(command: Command) -> std::io::Result<Self> {
        let (reply, answer) = mpsc::channel();
        supervisor()
            .requests
            .lock()
            .unwrap()
            .send((command, reply))
            .expect("the supervisor thread lives as long as the process");
        let child = answer
            .recv()
            .expect("the supervisor thread answers every request")?;
        Ok(Self { child })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its standard error, when it was piped.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions. The child is not reaped before
        // `self` is dropped or has exited (try_wait), so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let mut registered = AT_EXIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let status = self.child.try_wait().ok().flatten()?;
        registered.0.retain(|&pid| pid != self.child.id());
        Some(status)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub fn stop(&mut self, grace: std::time::Duration) {
        self.signal(libc::SIGTERM);
        if self.wait_timeout(grace).is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Unregister under the lock, so the exit handler never signals a reaped (reusable) pid.
        let mut registered = AT_EXIT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = self.child.kill();
        let _ = self.child.wait();
        registered.0.retain(|&pid| pid != self.child.id());
    }
}

/// Removes `dir` when the test binary exits normally (after its processes are killed).
pub fn remove_at_exit(dir: PathBuf) {
    supervisor();
    AT_EXIT.lock().unwrap().1.push(dir);
}

extern "C" fn kill_children_at_exit() {
    let Ok(mut registered) = AT_EXIT.lock() else {
        return;
    };
    for &pid in &registered.0 {
        // SAFETY: as above; waitpid reaps our own child (or fails harmlessly if already reaped).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
    }
    registered.0.clear();
    for dir in registered.1.drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}
