//! The classic repair, end to end with real guests and the Rhai host
//! primitives: stop the broken instance, move its root volume to a
//! running rescue instance, fix a file through the rescue console, move
//! the volume back as root, start, and check the fix from the console.

mod common;

use common::{assert_code, vm_lock, Drydock};

const R: &str = "region-a";

const REPAIR: &str = r#"
runbook(#{
    name: "repair-flow",
    params: #{
        instance: #{ type: "instance" },
        rescue: #{ type: "instance" },
        password: #{ type: "string" },
    },
});
let root = instance::describe(params.instance).root_volume;
step("stop the broken instance", || instance::stop(params.instance).state);
step("detach its root volume", || volume::detach(root).id);
step("attach it to the rescue instance", || volume::attach(root, params.rescue).attached_to);
step("fix it through the rescue console", || {
    let c = console::open(params.rescue);
    c.login("root", params.password);
    let find = "for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = \"" + root + "\" ] && echo /dev/$(basename $d); done";
    let dev = c.run(find).stdout.split("\n")[0];
    if dev == "" { throw "the rescue instance does not see " + root; }
    let fix = c.run("mkdir -p /mnt/fix && mount " + dev + " /mnt/fix && echo repaired > /mnt/fix/root/REPAIRED && umount /mnt/fix");
    if fix.exit_code != 0 { throw "fixing failed: " + fix.stdout; }
    dev
});
step("detach from the rescue instance", || volume::detach(root).id);
step("attach back as root", || volume::attach_root(root, params.instance).attach_index);
step("start the repaired instance", || instance::start(params.instance).state);
step("verify", || {
    let c = console::open(params.instance);
    c.wait_for_boot("120s");
    c.login("root", params.password);
    let r = c.run("cat /root/REPAIRED");
    if r.stdout != "repaired\n" { throw "the fix is not there: " + r.stdout; }
    r.stdout
})
"#;

#[test]
fn a_root_volume_is_repaired_through_a_rescue_instance() {
    let _vm = vm_lock();
    let dd = Drydock::new();
    let img = dd.image(R);
    let broken = dd.launch(R, &img, &["--type", "m1.small", "--root-password", "pw"]);
    let rescue = dd.launch(R, &img, &["--type", "n2.small", "--root-password", "pw"]);
    dd.write_runbook("repair-flow.rhai", REPAIR);
    let out = dd.run(&[
        "--json",
        "--region",
        R,
        "run",
        "repair-flow",
        "-p",
        &format!("instance={broken}"),
        "-p",
        &format!("rescue={rescue}"),
        "-p",
        "password=pw",
    ]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["output"], "repaired\n");
    assert_eq!(v["steps_run"], 8);
    let i = dd.instance(R, &broken);
    assert_eq!(i["state"], "running");
    assert_eq!(i["boots"], 2);
}
