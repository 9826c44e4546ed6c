//! `write_file` through the real binary: an existing file keeps its mode
//! and owner (a 0600 secret stays 0600 and keeps its uid/gid), a new file
//! gets 0666 & ~umask (the runner's umask, which drydock itself sets: 077
//! by default, see access.rs), and no temporary file is left behind.

mod common;

use common::{assert_code, Drydock};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn write_file_keeps_mode_and_owner_and_new_files_follow_the_umask() {
    let dd = Drydock::new();
    let w = dd.work();
    let secret = w.join("secret.conf");
    std::fs::write(&secret, "old\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The tests run as root (as CI does): give the file another owner, as
    // a service's configuration has.
    std::os::unix::fs::chown(&secret, Some(4242), Some(4343)).unwrap();
    let shared = w.join("shared.txt");
    std::fs::write(&shared, "old\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o664)).unwrap();
    dd.write_runbook(
        "w.rhai",
        r#"runbook(#{ name: "w" });
let w = env("WORK");
step("write", || {
    write_file(`${w}/secret.conf`, "new\n");
    write_file(`${w}/shared.txt`, "new\n");
    write_file(`${w}/fresh.txt`, "new\n");
    read_file(`${w}/secret.conf`)
});
shell("umask")
"#,
    );
    let v = dd.json(&["run", "w"]);
    assert_eq!(v["state"], "Success", "{v}");
    let umask = u32::from_str_radix(v["output"].as_str().unwrap().trim(), 8).unwrap();

    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "new\n");
    assert_eq!(m.mode() & 0o7777, 0o600, "the secret's mode changed");
    assert_eq!(
        (m.uid(), m.gid()),
        (4242, 4343),
        "the secret's owner changed"
    );
    let m = std::fs::metadata(&shared).unwrap();
    assert_eq!(
        m.mode() & 0o7777,
        0o664,
        "an existing mode is kept, not umasked"
    );
    let m = std::fs::metadata(w.join("fresh.txt")).unwrap();
    assert_eq!(
        m.mode() & 0o7777,
        0o666 & !umask,
        "a new file gets 0666 & ~umask ({umask:o})"
    );
    assert_eq!(m.uid(), 0);

    let mut names: Vec<String> = std::fs::read_dir(&w)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fresh.txt", "secret.conf", "shared.txt"]);
}

#[test]
fn write_file_errors_name_the_path_and_leave_nothing_behind() {
    let dd = Drydock::new();
    let w = dd.work();
    std::fs::create_dir(w.join("a-directory")).unwrap();
    dd.write_runbook(
        "w.rhai",
        r#"runbook(#{ name: "w" });
let w = env("WORK");
step("write", || write_file(`${w}/a-directory`, "x"));
"#,
    );
    let out = dd.run(&["run", "w"]);
    assert_code(&out, 1);
    let err = common::text(&out.stderr);
    assert!(
        err.contains("cannot write") && err.contains("a-directory"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&w).unwrap().count(), 1);
}
