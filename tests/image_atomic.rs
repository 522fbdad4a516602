//! Atomic imports: berth killed with SIGKILL mid-import leaves no image, and the next
//! `berth images` removes the stale temporary; a live import's temporary is left alone.

mod image_common;
use image_common::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn temporaries(r: &Rig) -> Vec<String> {
    std::fs::read_dir(r.store())
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".#berth-import-"))
                .collect()
        })
        .unwrap_or_default()
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_stdin_import(r: &Rig, name: &str) -> Killer {
    Killer(
        Command::new(BERTH)
            .arg("--store")
            .arg(r.store())
            .args(["import-tar", "-", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Feeds the first half of a tarball and waits until the import's tree has content.
fn feed_until_files(r: &Rig, child: &mut Killer, data: &[u8]) {
    let stdin = child.0.stdin.as_mut().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = temporaries(r);
        if let Some(tree) = t.iter().find(|n| !n.ends_with(".lock"))
            && std::fs::read_dir(r.store().join(tree))
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        {
            return;
        }
        assert!(Instant::now() < deadline, "import never started: {t:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn many_files() -> Vec<u8> {
    let mut t = TarW::new();
    for i in 0..400 {
        t.file(&format!("f{i:04}"), &vec![b'x'; 64 << 10], 0o644);
    }
    t.finish()
}

#[test]
fn sigkill_mid_import_leaves_nothing_and_is_cleaned() {
    let r = Rig::new();
    let data = many_files();
    let mut child = start_stdin_import(&r, "killed");
    feed_until_files(&r, &mut child, &data);
    // SIGKILL the importer we started, by its PID
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = child.0.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    assert!(!r.image("killed").exists(), "no image after SIGKILL");
    let stale = temporaries(&r);
    assert_eq!(
        stale.len(),
        2,
        "the tree and its lock stay until cleaned: {stale:?}"
    );
    // the next `berth images` cleans up, and lists nothing
    let o = r.berth(&["images", "--json"]);
    assert!(o.status.success());
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    assert!(temporaries(&r).is_empty(), "{:?}", temporaries(&r));
    r.assert_store_empty();

    // and the next import cleans too
    let mut child = start_stdin_import(&r, "killed2");
    feed_until_files(&r, &mut child, &data);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(temporaries(&r).len(), 2);
    let p = r.input("small.tar");
    std::fs::write(&p, TarW::new().file("a", b"1", 0o644).finish()).unwrap();
    r.ok(&["import-tar", p.to_str().unwrap(), "small"]);
    assert!(temporaries(&r).is_empty(), "{:?}", temporaries(&r));
    assert!(!r.image("killed2").exists());
}

#[test]
fn live_import_is_not_cleaned_and_completes() {
    let r = Rig::new();
    let data = many_files();
    let mut child = start_stdin_import(&r, "live");
    feed_until_files(&r, &mut child, &data);
    let before = temporaries(&r);
    assert_eq!(before.len(), 2);
    let o = r.berth(&["images"]);
    assert!(o.status.success());
    assert_eq!(
        temporaries(&r),
        before,
        "a live import's temporary must stay"
    );
    // finish the stream
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(&data[data.len() / 2..]).unwrap();
    drop(stdin);
    let st = child.0.wait().unwrap();
    assert!(st.success());
    assert!(temporaries(&r).is_empty());
    assert_eq!(std::fs::read_dir(r.image("live")).unwrap().count(), 400);
}
