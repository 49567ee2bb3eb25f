//! `pyralog keys ...`, run as the real binary against a temporary home.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pyralog_ledger::{Hash, Keypair};
use serde_json::Value;

const PASSPHRASE: &str = "correct horse battery staple";

/// A wallet home in a temporary directory.
struct Wallet {
    home: tempfile::TempDir,
}

/// What a run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self
    }

    fn fails(self) -> Run {
        assert_eq!(self.code, Some(1), "stdout: {}", self.stdout);
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.stdout))
    }
}

impl Wallet {
    fn new() -> Wallet {
        Wallet {
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn key_file(&self, name: &str) -> PathBuf {
        self.home.path().join("keys").join(format!("{name}.json"))
    }

    /// Runs `pyralog --home HOME args...` with stdin closed (not a terminal)
    /// and PYRALOG_PASSPHRASE set to `passphrase` if given.
    fn run(&self, args: &[&str], passphrase: Option<&str>) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyralog"));
        cmd.arg("--home")
            .arg(self.home.path())
            .args(args)
            .env_remove("PYRALOG_HOME")
            .env_remove("PYRALOG_NODE")
            .env_remove("PYRALOG_PASSPHRASE")
            .stdin(Stdio::null());
        if let Some(p) = passphrase {
            cmd.env("PYRALOG_PASSPHRASE", p);
        }
        let out = cmd.output().expect("run pyralog");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }

    fn with_pw(&self, args: &[&str]) -> Run {
        self.run(args, Some(PASSPHRASE))
    }

    fn address_of(&self, name: &str) -> String {
        let shown = self.run(&["-o", "json", "keys", "show", name], None).ok();
        shown.json()["address"]
            .as_str()
            .expect("address")
            .to_owned()
    }

    /// Rewrites one field of a key file.
    fn edit(&self, name: &str, field: &str, value: Value) {
        let path = self.key_file(name);
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        v[field] = value;
        std::fs::write(&path, v.to_string()).expect("write");
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn new_then_list_and_show_give_the_same_address() {
    let w = Wallet::new();
    let created = w
        .with_pw(&["-o", "json", "keys", "new", "alice"])
        .ok()
        .json();
    let address = created["address"].as_str().expect("address").to_owned();
    assert!(address.starts_with("pyr"));
    assert_eq!(created["name"], "alice");
    assert_eq!(created["encrypted"], true);

    let listed = w.run(&["-o", "json", "keys", "list"], None).ok().json();
    let keys = listed.as_array().expect("array");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "alice");
    assert_eq!(keys[0]["address"], address.as_str());

    assert_eq!(w.address_of("alice"), address);

    let text = w.run(&["keys", "show", "alice"], None).ok();
    assert!(text.stdout.contains(&address), "{}", text.stdout);
    let text = w.run(&["keys", "list"], None).ok();
    assert!(text.stdout.contains(&address) && text.stdout.contains("alice"));
    // The key file holds the address, and nothing of the seed in the clear.
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(w.key_file("alice")).expect("read"))
            .expect("json");
    assert_eq!(file["address"], address.as_str());
    assert_eq!(file["kdf"], "argon2id");
    assert_eq!(file["cipher"], "chacha20poly1305");
}

#[test]
fn export_then_import_under_another_name_gives_the_same_address() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    let exported = w.with_pw(&["keys", "export", "alice"]).ok();
    let seed = exported.stdout.trim();
    assert_eq!(seed.len(), 64);
    assert!(seed.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(exported.stderr.contains("SECRET"), "{}", exported.stderr);

    let file = w.home.path().join("alice.key");
    write_file(&file, &exported.stdout);
    let imported = w
        .run(
            &[
                "-o",
                "json",
                "keys",
                "import",
                "alice2",
                file.to_str().expect("utf-8"),
            ],
            Some("another passphrase"),
        )
        .ok()
        .json();
    assert_eq!(imported["address"], w.address_of("alice").as_str());

    // JSON export carries the same seed and address.
    let again = w
        .run(
            &["-o", "json", "keys", "export", "alice2"],
            Some("another passphrase"),
        )
        .ok()
        .json();
    assert_eq!(again["seed"], seed);
    assert_eq!(again["address"], imported["address"]);
}

#[test]
fn a_wrong_passphrase_fails_clearly_with_exit_code_1() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    let run = w.run(&["keys", "export", "alice"], Some("not it")).fails();
    assert!(
        run.stderr.contains("wrong passphrase or corrupt key file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "nothing secret or otherwise on stdout"
    );
}

#[test]
fn a_tampered_ciphertext_byte_fails() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    let text = std::fs::read_to_string(w.key_file("alice")).expect("read");
    let v: Value = serde_json::from_str(&text).expect("json");
    let mut ct = v["ciphertext"].as_str().expect("hex").as_bytes().to_vec();
    ct[10] = if ct[10] == b'f' { b'e' } else { b'f' };
    w.edit(
        "alice",
        "ciphertext",
        Value::String(String::from_utf8(ct).expect("ascii")),
    );
    let run = w.with_pw(&["keys", "export", "alice"]).fails();
    assert!(run.stderr.contains("wrong passphrase or corrupt key file"));
}

#[test]
fn a_swapped_address_field_fails() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    w.with_pw(&["keys", "new", "mallory"]).ok();
    let mallory = w.address_of("mallory");
    // Someone rewrites alice's file to show mallory's address, hoping funds
    // meant for alice go to mallory: unlocking it refuses.
    w.edit("alice", "address", Value::String(mallory));
    let run = w.with_pw(&["keys", "export", "alice"]).fails();
    assert!(run.stderr.contains("wrong passphrase or corrupt key file"));
}

#[test]
fn a_duplicate_name_is_refused_and_the_key_kept() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    let before = std::fs::read(w.key_file("alice")).expect("read");
    let run = w.with_pw(&["keys", "new", "alice"]).fails();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = w
        .run(&["keys", "new", "alice", "--insecure-plaintext"], None)
        .fails();
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(std::fs::read(w.key_file("alice")).expect("read"), before);
}

#[test]
fn bad_names_are_refused() {
    let w = Wallet::new();
    let long = "x".repeat(65);
    for name in ["a b", "../up", "a/b", "dot.ted", "ünï", long.as_str()] {
        let run = w.with_pw(&["keys", "new", name]).fails();
        assert!(
            run.stderr.contains("bad key name"),
            "{name}: {}",
            run.stderr
        );
    }
    let run = w.run(&["keys", "show", "../etc"], None).fails();
    assert!(run.stderr.contains("bad key name"));
    assert!(!w.home.path().join("up.json").exists());
}

#[test]
fn unknown_keys_are_named() {
    let w = Wallet::new();
    for args in [["keys", "show", "ghost"], ["keys", "export", "ghost"]] {
        let run = w.with_pw(&args).fails();
        assert!(
            run.stderr.contains("unknown key \"ghost\""),
            "{}",
            run.stderr
        );
    }
    let empty = w.run(&["-o", "json", "keys", "list"], None).ok().json();
    assert_eq!(empty, Value::Array(vec![]));
}

#[cfg(unix)]
#[test]
fn the_key_file_is_0600_and_the_directory_0700() {
    use std::os::unix::fs::PermissionsExt;
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    w.run(&["keys", "new", "dev", "--insecure-plaintext"], None)
        .ok();
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&w.key_file("alice")), 0o600);
    assert_eq!(mode(&w.key_file("dev")), 0o600);
    assert_eq!(mode(&w.home.path().join("keys")), 0o700);
}

#[test]
fn insecure_plaintext_round_trips_and_says_so() {
    let w = Wallet::new();
    let run = w
        .run(
            &["-o", "json", "keys", "new", "dev", "--insecure-plaintext"],
            None,
        )
        .ok();
    assert!(run.stderr.contains("UNENCRYPTED"), "{}", run.stderr);
    let created = run.json();
    assert_eq!(created["encrypted"], false);

    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(w.key_file("dev")).expect("read"))
            .expect("json");
    assert_eq!(file["cipher"], "none");

    // No passphrase is needed to get it back, and the seed is the one stored.
    let exported = w
        .run(&["-o", "json", "keys", "export", "dev"], None)
        .ok()
        .json();
    assert_eq!(exported["seed"], file["ciphertext"]);
    let shown = w.run(&["keys", "show", "dev"], None).ok();
    assert!(shown.stdout.contains("NO (stored in plaintext)"));

    // Imported the same way, it lands at the same address.
    let key = w.home.path().join("dev.key");
    write_file(&key, exported["seed"].as_str().expect("seed"));
    let run = w
        .run(
            &[
                "keys",
                "import",
                "dev2",
                key.to_str().expect("utf-8"),
                "--insecure-plaintext",
            ],
            None,
        )
        .ok();
    assert!(run.stderr.contains("UNENCRYPTED"));
    assert_eq!(
        w.address_of("dev2"),
        created["address"].as_str().expect("address")
    );
}

#[test]
fn the_testnet_faucet_key_format_imports() {
    let w = Wallet::new();
    let faucet = Keypair::from_seed(&[42; 32]);
    let path = w.home.path().join("faucet.key");
    // What `pyralog-testnet genesis --keys-dir` writes: 64 hex digits and a newline.
    write_file(&path, &format!("{}\n", Hash(faucet.seed()).to_hex()));
    let imported = w
        .with_pw(&[
            "-o",
            "json",
            "keys",
            "import",
            "faucet",
            path.to_str().expect("utf-8"),
        ])
        .ok()
        .json();
    assert_eq!(imported["address"], faucet.address().to_human().as_str());
    let exported = w.with_pw(&["keys", "export", "faucet"]).ok();
    assert_eq!(exported.stdout.trim(), Hash(faucet.seed()).to_hex());

    // A file that is not a seed is refused with what was expected.
    let junk = w.home.path().join("junk.key");
    write_file(&junk, "hello\n");
    let run = w
        .with_pw(&["keys", "import", "junk", junk.to_str().expect("utf-8")])
        .fails();
    assert!(run.stderr.contains("64 hex digits"), "{}", run.stderr);
    assert!(!w.key_file("junk").exists());
}

#[test]
fn json_output_is_one_document_per_command() {
    let w = Wallet::new();
    let seed_file = w.home.path().join("seed.key");
    write_file(&seed_file, &format!("{}\n", Hash([7; 32]).to_hex()));
    let seed_path = seed_file.to_str().expect("utf-8");
    let commands: [&[&str]; 7] = [
        &["-o", "json", "keys", "list"],
        &["-o", "json", "keys", "new", "a"],
        &[
            "--output",
            "json",
            "keys",
            "new",
            "b",
            "--insecure-plaintext",
        ],
        &["keys", "import", "c", seed_path, "-o", "json"],
        &["-o", "json", "keys", "list"],
        &["-o", "json", "keys", "show", "a"],
        &["-o", "json", "keys", "export", "a"],
    ];
    for args in commands {
        let run = w.with_pw(args).ok();
        let doc = run.json();
        assert!(doc.is_object() || doc.is_array(), "{args:?}: {doc}");
    }
    let listed = w.run(&["-o", "json", "keys", "list"], None).ok().json();
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
}

#[test]
fn no_terminal_and_no_passphrase_variable_is_a_clear_error() {
    let w = Wallet::new();
    let run = w.run(&["keys", "new", "alice"], None).fails();
    assert!(run.stderr.contains("PYRALOG_PASSPHRASE"), "{}", run.stderr);
    assert!(
        run.stderr.contains("--insecure-plaintext"),
        "{}",
        run.stderr
    );
    assert!(!w.key_file("alice").exists());

    w.with_pw(&["keys", "new", "alice"]).ok();
    let run = w.run(&["keys", "export", "alice"], None).fails();
    assert!(run.stderr.contains("PYRALOG_PASSPHRASE"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn an_empty_passphrase_is_refused_for_new_keys() {
    let w = Wallet::new();
    let run = w.run(&["keys", "new", "alice"], Some("")).fails();
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
    assert!(!w.key_file("alice").exists());
}

#[test]
fn every_subcommand_has_help() {
    let w = Wallet::new();
    for args in [
        &["--help"][..],
        &["keys", "--help"],
        &["keys", "new", "--help"],
        &["keys", "list", "--help"],
        &["keys", "show", "--help"],
        &["keys", "import", "--help"],
        &["keys", "export", "--help"],
    ] {
        let run = w.run(args, None).ok();
        assert!(run.stdout.contains("Usage:"), "{args:?}: {}", run.stdout);
    }
    let new = w.run(&["keys", "new", "--help"], None).ok();
    assert!(
        new.stdout.contains("--insecure-plaintext") && new.stdout.contains("PYRALOG_PASSPHRASE")
    );
    let top = w.run(&["--help"], None).ok();
    for flag in [
        "--home",
        "--node",
        "--output",
        "PYRALOG_HOME",
        "PYRALOG_NODE",
    ] {
        assert!(top.stdout.contains(flag), "{flag}: {}", top.stdout);
    }
}

#[test]
fn pow_bench_reports_a_rate_and_times_that_double_per_bit() {
    let home = tempfile::tempdir().expect("home");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pyralog"))
        .args(["--home"])
        .arg(home.path())
        .args(["-o", "json", "pow", "bench", "--seconds", "0.3"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let rate = v["hashes_per_sec"].as_f64().expect("rate");
    assert!(rate > 0.0);
    let times: Vec<f64> = v["expected_seconds"]
        .as_array()
        .expect("table")
        .iter()
        .map(|e| e["seconds"].as_f64().expect("s"))
        .collect();
    for w in times.windows(2) {
        assert!(
            (w[1] / w[0] - 4.0).abs() < 1e-6,
            "two more bits, four times the work: {w:?}"
        );
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_pyralog"))
        .args(["pow", "bench", "--seconds", "0"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--seconds must be between"));
}

#[test]
fn staking_commands_refuse_bad_input_before_talking_to_a_node() {
    let w = Wallet::new();
    w.with_pw(&["keys", "new", "alice"]).ok();
    // No node listens there: every refusal below comes first.
    let node = ["--node", "http://127.0.0.1:9"];
    let zero = w
        .with_pw(
            &[
                &node[..],
                &[
                    "stake",
                    "--from",
                    "alice",
                    "--validator",
                    "alice",
                    "--amount",
                    "0",
                ],
            ]
            .concat(),
        )
        .fails();
    assert!(
        zero.stderr.contains("--amount must be at least 1"),
        "{}",
        zero.stderr
    );
    let unknown = w
        .with_pw(
            &[
                &node[..],
                &[
                    "unstake",
                    "--from",
                    "alice",
                    "--validator",
                    "nobody",
                    "--amount",
                    "5",
                ],
            ]
            .concat(),
        )
        .fails();
    assert!(
        unknown
            .stderr
            .contains("\"nobody\" is neither an address nor a key"),
        "{}",
        unknown.stderr
    );
    let bad_key = w.home.path().join("validator_key");
    write_file(&bad_key, "not a seed");
    let register = w
        .with_pw(
            &[
                &node[..],
                &[
                    "validator",
                    "register",
                    "--from",
                    "alice",
                    "--validator-key",
                    &bad_key.to_string_lossy(),
                ],
            ]
            .concat(),
        )
        .fails();
    assert!(
        register.stderr.contains("validator_key"),
        "names the file: {}",
        register.stderr
    );
    assert!(
        register.stderr.contains("64 hex digits"),
        "says what it wants: {}",
        register.stderr
    );
}
