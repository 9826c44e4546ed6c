//! Expect scan throughput, side by side in one run: a 100 MB boot-log-like
//! stream from a pty, three patterns that match only at the very end.
//! Contenders: a plain read of the same pty (the ceiling), drydock's
//! expect engine, Tcl expect and Python pexpect (Debian packages). Each
//! runs as its own process; peak memory is that process's max RSS.
//!
//! Run with `cargo bench --bench expect_throughput [-- SIZE_MB] [no-pexpect]`
//! (pexpect is superlinear: 100 MB takes minutes).

use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drydock_stdlib::expect::{ExpectOptions, Expecter, FdTransport, Outcome, Pattern, PatternSet};

const END: &str = "drydock-bench login: ";

fn make_log(path: &std::path::Path, mb: usize) {
    if std::fs::metadata(path)
        .map(|m| m.len() as usize > mb << 20)
        .unwrap_or(false)
    {
        return;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0usize;
    let mut i = 0u64;
    while written < mb << 20 {
        let line = format!(
            "[{:>5}.{:06}] \x1b[0;32m  OK  \x1b[0m Started unit-{i}.service - Some Daemon Number {i} (pid {}).\r\n",
            i / 1000,
            i % 1_000_000,
            1000 + i % 30000
        );
        f.write_all(line.as_bytes()).unwrap();
        written += line.len();
        i += 1;
    }
    write!(f, "\r\n{END}").unwrap();
}

/// In a child process: spawn `cat FILE` on a pty and consume it.
fn child(mode: &str, file: &str) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we own; other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: fresh descriptors from openpty, owned here.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let mut cat = Command::new("cat")
        .arg(file)
        .stdout(slave.try_clone().unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    drop(slave);
    match mode {
        "plain" => {
            let mut m = master;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut m, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        _ => {
            let mut ex = Expecter::new(
                FdTransport::new(master, "bench pty"),
                ExpectOptions::default(),
            );
            let set = PatternSet::new(&[
                Pattern::Regex(r"Kernel panic - not syncing: .*".into()),
                Pattern::Regex(r"(\S+) login: ".into()),
                Pattern::Exact("Press S to skip mounting or M for manual recovery".into()),
            ])
            .unwrap();
            match ex.expect(&set, Duration::from_secs(600)).unwrap() {
                Outcome::Matched(m) => assert_eq!(m.index, 1),
                other => panic!("no match: {other:?}"),
            }
        }
    }
    let _ = cat.wait();
}

/// Runs a command, returns (seconds, max RSS in MiB). The child is reaped
/// by wait4 (not `Child::wait`) to get its resource usage.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> (f64, f64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid storage for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and fills `status` and `usage`, which we own.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    (
        start.elapsed().as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(mode), Some(file)) = (std::env::var("DRYDOCK_BENCH_CHILD").ok(), args.get(1)) {
        child(&mode, file);
        return;
    }
    let mb: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/bench-console-{mb}mb.log"));
    make_log(&file, mb);
    let me = std::env::current_exe().unwrap();
    let f = file.to_str().unwrap();
    println!("expect scan of a {mb} MB boot-log-like pty stream, 3 patterns, match at the end");
    println!(
        "{:<34} {:>9} {:>11} {:>9}",
        "tool", "seconds", "vs plain", "peak MiB"
    );
    let (plain, plain_mem) = measure(Command::new(&me).arg(f).env("DRYDOCK_BENCH_CHILD", "plain"));
    println!(
        "{:<34} {:>9.2} {:>10.2}x {:>9.1}",
        "plain pty read (ceiling)", plain, 1.0, plain_mem
    );
    let (t, m) = measure(
        Command::new(&me)
            .arg(f)
            .env("DRYDOCK_BENCH_CHILD", "drydock"),
    );
    println!(
        "{:<34} {:>9.2} {:>10.2}x {:>9.1}",
        "drydock expect",
        t,
        t / plain,
        m
    );
    let tcl = format!(
        "set timeout -1; match_max 100000; spawn -noecho cat {f}; expect {{ -re {{Kernel panic - not syncing: .*}} {{}} -re {{(\\S+) login: }} {{}} \"Press S to skip mounting or M for manual recovery\" {{}} }}"
    );
    if Command::new("expect").arg("-v").output().is_ok() {
        let (t, m) = measure(Command::new("expect").arg("-c").arg(&tcl));
        println!(
            "{:<34} {:>9.2} {:>10.2}x {:>9.1}",
            "Tcl expect",
            t,
            t / plain,
            m
        );
    } else {
        println!(
            "{:<34} {:>9}",
            "Tcl expect", "not installed (scripts/setup installs it)"
        );
    }
    if args.iter().any(|a| a == "no-pexpect") {
        return;
    }
    let py = format!(
        "import pexpect\np = pexpect.spawn('cat', ['{f}'], timeout=None)\n\
         i = p.expect([r'Kernel panic - not syncing: .*', r'(\\S+) login: ', 'Press S to skip mounting or M for manual recovery'])\nassert i == 1\n"
    );
    let (t, m) = measure(Command::new("/usr/bin/python3").arg("-c").arg(&py));
    println!(
        "{:<34} {:>9.2} {:>10.2}x {:>9.1}",
        "Python pexpect",
        t,
        t / plain,
        m
    );
}
