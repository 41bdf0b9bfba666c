//! Fault injection against real components: the database restarting while jobs run, and the
//! object store's disk filling up. Each test needs privileges it may not have (running its
//! own PostgreSQL cluster, mounting a tmpfs) and prints SKIPPED when it cannot run (or
//! fails, when `FLEXPHOTO_REQUIRE_SERVICES` lists the service).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{jpeg, App, Backend, Options, ADMIN};
use crate::tiny_disk::{is_root, TinyDisk};

/// A PostgreSQL cluster of this test's own, so it can be stopped without disturbing the
/// shared one other tests use.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `Some("postgres")` when running as root (PostgreSQL refuses to run as root).
    run_as: Option<String>,
}

fn postgres_bindir() -> Option<PathBuf> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if dir.join("initdb").is_file() {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

impl PrivatePostgres {
    fn start() -> Option<Self> {
        let Some(bin) = postgres_bindir() else {
            crate::skip::skip(
                "postgres",
                "no PostgreSQL server binaries (initdb); the restart test did not run",
            );
            return None;
        };
        let run_as = is_root().then(|| "postgres".to_owned());
        let data =
            std::env::temp_dir().join(format!("flexphoto-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data).ok()?;
        if let Some(user) = &run_as {
            let ok = Command::new("chown")
                .args([&format!("{user}:{user}"), &data.display().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                crate::skip::skip(
                    "postgres",
                    &format!("cannot hand {} to {user}", data.display()),
                );
                return None;
            }
        }
        let port = crate::ports::free_port();
        let pg = PrivatePostgres {
            bin,
            data,
            port,
            run_as,
        };
        let d = pg.data.display().to_string();
        if !pg.run(
            "initdb",
            &["-D", &d, "-A", "trust", "-U", "postgres", "--no-sync"],
        ) {
            crate::skip::skip("postgres", "initdb failed; the restart test did not run");
            return None;
        }
        if !pg.up() {
            crate::skip::skip("postgres", "the private PostgreSQL did not start");
            return None;
        }
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn up(&self) -> bool {
        let d = self.data.display().to_string();
        let opts = format!(
            "-p {} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.run(
            "pg_ctl",
            &["-D", &d, "-o", &opts, "-w", "-t", "30", "start"],
        )
    }

    /// Stops at once, as a crash would: no checkpoint, connections cut.
    fn crash(&self) {
        let d = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &d, "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The database dies (immediate stop, connections cut) while images are being processed
/// and comes back: requests during the outage get a clear 503 with `Retry-After` and never
/// hang, and afterwards every accepted upload is processed exactly once.
#[tokio::test]
async fn a_database_restart_mid_job_loses_nothing() {
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let app = App::spawn(
        Options::new(Backend::Sqlite)
            .env("FLEXPHOTO__DATABASE__URL", pg.url())
            .env("FLEXPHOTO__QUEUE__LEASE_SECS", "3")
            .env("FLEXPHOTO__QUEUE__WORKERS", "2"),
    )
    .await;
    let n = 8u32;
    let mut ids = Vec::new();
    for seed in 0..n {
        let (s, v) = app
            .upload(ADMIN, "dora", "p.jpg", &jpeg(3000, 2000, 700 + seed))
            .await;
        assert_eq!(s, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = app.get_json("/v1/jobs/stats", ADMIN).await;
        if st["queue"]["jobs"]["running"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no job started: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.crash();
    // While the database is away the API says so, quickly and clearly.
    let started = Instant::now();
    let (s, v) = app.get_json(&format!("/v1/images/{}", ids[0]), ADMIN).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the request waited {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pg.up(), "the private PostgreSQL did not come back");
    for id in &ids {
        let img = app.wait_done(id, Duration::from_secs(180)).await;
        assert_eq!(img["status"], "ready", "{img}\nlog:\n{}", app.log());
    }
    let (_, stats) = app.get_json("/v1/jobs/stats", ADMIN).await;
    let jobs = &stats["queue"]["by_kind"]["process"];
    assert_eq!(
        jobs["done"].as_i64().unwrap_or(0),
        n as i64,
        "one finished job per upload: {stats}"
    );
    assert!(
        jobs["dead"].is_null() && jobs["queued"].is_null(),
        "{stats}"
    );
    app.cleanup().await;
    drop(pg);
}

/// The object store's disk fills up: uploads are refused with 507 and a message that says
/// so, nothing half-written becomes an image, what was accepted before stays intact, and
/// uploads work again once there is room.
#[tokio::test]
async fn a_full_object_store_refuses_uploads_cleanly() {
    let Some(disk) = TinyDisk::mount(4, "the disk-full test") else {
        return;
    };
    let objects = disk.path().join("objects");
    let app = App::spawn(
        Options::new(Backend::Sqlite).env("FLEXPHOTO__STORAGE__DIR", objects.display().to_string()),
    )
    .await;
    let (s, v) = app
        .upload(ADMIN, "eve", "first.jpg", &jpeg(600, 400, 1))
        .await;
    assert_eq!(s, 201, "{v}");
    let first = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.wait_done(&first, Duration::from_secs(60)).await["status"],
        "ready"
    );
    // Fill the disk to the last byte.
    let filler = disk.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
    }
    let (s, v) = app
        .upload(ADMIN, "eve", "second.jpg", &jpeg(1200, 900, 2))
        .await;
    assert_eq!(s, 507, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_storage", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("space"),
        "{v}"
    );
    let (_, list) = app.get_json("/v1/images?owner=eve", ADMIN).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(1),
        "a refused upload must leave no image: {list}"
    );
    std::fs::remove_file(&filler).unwrap();
    let (s, v) = app
        .upload(ADMIN, "eve", "second.jpg", &jpeg(1200, 900, 2))
        .await;
    assert_eq!(s, 201, "{v}");
    let second = v["id"].as_str().unwrap().to_owned();
    for id in [&first, &second] {
        assert_eq!(
            app.wait_done(id, Duration::from_secs(60)).await["status"],
            "ready"
        );
    }
    app.cleanup().await;
    drop(disk);
}
