//! The built `tollgate` binary, run on files in temporary directories and on the shipped
//! envoy/ files: what it prints and its exit codes (0 accepted, 1 refused, 2 usage).

// Tests fail loudly: unwrap, expect, panic and indexing are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;
use support::*;

const WAYNE_AT: &str = "2026-11-25T13:47:00Z";

#[test]
fn check_accepts_every_shipped_configuration_and_prints_the_filters_summary() {
    let files = [
        "envoy/envoy.yaml",
        "envoy/per-route.yaml",
        "envoy/minimal.yaml",
        "envoy/live-reload/listeners.yaml",
        "envoy/istio-wasmplugin.yaml",
        "envoy/envoy-gateway-policy.yaml",
    ];
    let out = tollgate(&[&["check"], &files[..]].concat(), "");
    assert_eq!(out.code, 0, "{out:?}");
    // The demo gateways keep plaintext keys (their READMEs' sessions send them): warned about,
    // not refused. The manifests meant to be adapted hold only sha256: keys.
    let warning = |file: &str, keys: &str| {
        format!(
            "{file}: listener gateway, plugin tollgate: warning: consumers: {keys}, which Envoy's \
             admin /config_dump shows; list each as sha256:<hex> instead (`tollgate hash-key` \
             prints it)\n"
        )
    };
    assert_eq!(
        out.stderr,
        [
            warning(
                "envoy/envoy.yaml",
                "6 plaintext keys (of acme, wayne, initech, umbrella, ops)"
            ),
            warning("envoy/per-route.yaml", "1 plaintext key (of acme)"),
            warning(
                "envoy/live-reload/listeners.yaml",
                "2 plaintext keys (of acme, globex)"
            ),
        ]
        .concat(),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "envoy/envoy.yaml: listener gateway, plugin tollgate: accepted\n  4 plans [free (2 limits), \
             trial (1 limit), pro (1 limit), internal (unlimited)], 6 consumers, 7 keys, credentials \
             [header x-api-key, authorization Bearer, query api_key], anonymous_plan off, mode enforce, \
             on_store_error deny, usage_path /tollgate/usage, calendar_utc_offset Z\n"
        ),
        "{out:?}"
    );
    for heading in [
        "envoy/per-route.yaml: listener gateway, plugin tollgate: accepted",
        "envoy/minimal.yaml: listener gateway, plugin tollgate: accepted",
        "envoy/live-reload/listeners.yaml: listener gateway, plugin tollgate: accepted",
        "envoy/istio-wasmplugin.yaml: WasmPlugin tollgate: accepted",
        "envoy/envoy-gateway-policy.yaml: EnvoyExtensionPolicy tollgate, wasm tollgate: accepted",
    ] {
        assert!(out.stdout.contains(heading), "{heading}\n{out:?}");
    }
    assert_eq!(out.stdout.matches(": accepted\n").count(), files.len());
}

#[test]
fn a_plugin_json_file_is_checked_as_the_filter_checks_it() {
    let dir = TempDir::new();
    let good = dir.write(
        "plugin.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 5, "window": "day"}]}},
            "consumers": {"a": {"plan": "p", "keys": ["k1", "k2"]}}, "calendar_utc_offset": "+05:30"}"#,
    );
    let out = tollgate(&["check", &good], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "{good}: accepted\n  1 plan [p (1 limit)], 1 consumer, 2 keys, credentials [header x-api-key], \
             anonymous_plan off, mode enforce, on_store_error deny, usage_path off, calendar_utc_offset +05:30\n"
        )
    );

    let typo = dir.write(
        "typo.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requets": 5, "window": "day"}]}}}"#,
    );
    let out = tollgate(&["check", &typo], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        format!(
            "{typo}: configuration refused: plans.p.limits[0]: unknown field `requets`, expected one of \
             `name`, `requests`, `tokens`, `units`, `unit`, `window`, `status`, `scope`\n"
        )
    );

    let quoted = dir.write(
        "quoted.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requests": "100", "window": "day"}]}}}"#,
    );
    let out = tollgate(&["check", &quoted], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "configuration refused: plans.p.limits[0].requests: expected a whole number, found a string \
             (write numbers without quotes)"
        ),
        "{out:?}"
    );
    assert!(!out.stderr.contains("u64"), "{out:?}");
}

#[test]
fn check_with_an_entitlements_document_checks_it_as_the_filter_checks_a_snapshot() {
    let dir = TempDir::new();
    let config = dir.write(
        "plugin.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 5, "window": "day"}]}},
            "entitlements": {"cluster": "cp", "path": "/v1/consumers"}}"#,
    );
    let good = dir.write(
        "good.json",
        r#"{"consumers": {"a": {"plan": "p", "keys": ["k1"]}, "b": {"plan": "p", "keys": ["k2"]}}}"#,
    );
    let out = tollgate(&["check", "--entitlements", &good, &config], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("accepted\n  1 plan [p (1 limit)], 2 consumers, 2 keys"),
        "{out:?}"
    );
    assert!(out
        .stdout
        .contains("entitlements from cluster cp path /v1/consumers every 10000 ms"));
    let bad = dir.write(
        "bad.json",
        r#"{"consumers": {"a": {"plan": "gold", "keys": ["k1"]}}}"#,
    );
    let out = tollgate(&["check", "--entitlements", &bad, &config], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "configuration refused: entitlements document: consumers.a.plan: plan `gold` does not exist (plans: p)"
        ),
        "{out:?}"
    );
}

#[test]
fn a_refusal_inside_an_envoy_file_names_the_field_and_a_syntax_error_its_line_in_the_file() {
    let dir = TempDir::new();
    let shipped = read_repo("envoy/envoy.yaml");
    let typo = dir.write(
        "typo.yaml",
        &shipped.replacen("\"requests\": 1000,", "\"requets\": 1000,", 1),
    );
    let out = tollgate(&["check", &typo], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "{typo}: listener gateway, plugin tollgate: configuration refused: plans.free.limits[0]: \
             unknown field `requets`, expected one of `name`, `requests`, `tokens`, `units`, `unit`, `window`, `status`, `scope`\n"
        )
    );

    // A comma missing after the first limit: the position is given in the YAML file too.
    let broken = shipped.replacen("\"window\": \"day\"},", "\"window\": \"day\"}", 1);
    let syntax = dir.write("syntax.yaml", &broken);
    let out = tollgate(&["check", &syntax], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "configuration refused: invalid JSON at line 10 column 7 of the plugin configuration: \
             expected `,` or `]` (in plans.free.limits)"
        ),
        "{out:?}"
    );
    let position = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("  (in {syntax}: line ")))
        .unwrap_or_else(|| panic!("no position in the file: {out:?}"));
    let (line, column) = position
        .trim_end_matches(')')
        .split_once(", column ")
        .unwrap();
    let (line, column): (usize, usize) = (line.parse().unwrap(), column.parse().unwrap());
    let text = broken.lines().nth(line - 1).unwrap();
    assert_eq!(
        text.get(column - 1..),
        Some("{\"name\": \"burst\", \"requests\": 5, \"window\": \"10s\", \"status\": 429}"),
        "line {line} column {column} of the file is where the comma is missing"
    );
}

#[test]
fn every_tollgate_filter_of_a_file_is_checked_and_other_wasm_filters_are_left_alone() {
    let dir = TempDir::new();
    let shipped = read_repo("envoy/envoy.yaml");
    // Two listeners with tollgate (one of them refused) and a third Wasm filter of another
    // plugin: each tollgate configuration gets its own verdict.
    let listeners = shipped
        .split_once("  listeners:\n")
        .unwrap()
        .1
        .split_once("  - name: backend\n")
        .unwrap()
        .0;
    let second = listeners
        .replacen("- name: gateway", "- name: partners", 1)
        .replacen(
            "\"usage_path\": \"/tollgate/usage\"",
            "\"anonymous_plan\": \"gold\"",
            1,
        );
    let third = listeners
        .replacen("- name: gateway", "- name: other", 1)
        .replace("name: tollgate", "name: other")
        .replace("root_id: tollgate", "root_id: other")
        .replace("vm_id: tollgate", "vm_id: other")
        .replace("release/tollgate.wasm", "release/other.wasm");
    let several = shipped.replacen(
        "  - name: backend\n",
        &format!("{second}{third}  - name: backend\n"),
        1,
    );
    let file = dir.write("several.yaml", &several);
    let out = tollgate(&["check", &file], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "{file}: listener gateway, plugin tollgate: accepted\n"
        )),
        "{out:?}"
    );
    assert_eq!(
        out.stderr.lines().nth(1).unwrap_or_default(),
        format!(
            "{file}: listener partners, plugin tollgate: configuration refused: anonymous_plan: plan \
             `gold` does not exist (plans: free, trial, pro, internal)"
        ),
        "{out:?}"
    );
    assert!(
        out.stderr.starts_with(&format!(
            "{file}: listener gateway, plugin tollgate: warning: consumers: 6 plaintext keys"
        )),
        "{out:?}"
    );
    assert_eq!(out.stderr.lines().count(), 2, "{out:?}");
    assert!(!out.stdout.contains("other"), "{out:?}");

    // No tollgate filter at all: refused, naming what was there.
    let none = dir.write(
        "none.yaml",
        &third
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("- name: other", "listeners:\n- name: other", 1),
    );
    let out = tollgate(&["check", &none], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no tollgate configuration found")
            && out
                .stderr
                .contains("other Wasm filters: listener other, plugin other"),
        "{out:?}"
    );
}

#[test]
fn usage_errors_exit_2_and_unreadable_files_exit_1() {
    for args in [
        &["check"][..],
        &["frobnicate"],
        &["explain", "envoy/envoy.yaml"],
        &[
            "explain",
            "envoy/envoy.yaml",
            "--key",
            "k",
            "--at",
            "tomorrow",
        ],
        &["explain", "envoy/envoy.yaml", "--key", "k", "--anonymous"],
    ] {
        let out = tollgate(args, "");
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
    }
    let out = tollgate(&["check", "no/such/file.yaml"], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .starts_with("no/such/file.yaml: cannot read the file"),
        "{out:?}"
    );
    let help = tollgate(&["--help"], "");
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes: 0 accepted"), "{help:?}");
}

#[test]
fn hash_key_prints_the_digest_the_configuration_accepts_and_never_the_key() {
    // globex's entry in envoy/envoy.yaml is the hash of `globex-key`.
    let shipped = read_repo("envoy/envoy.yaml");
    for input in ["globex-key", "globex-key\n", "globex-key\r\n"] {
        let out = tollgate(&["hash-key"], input);
        assert_eq!(out.code, 0, "{out:?}");
        let digest = out.stdout.trim_end();
        assert!(shipped.contains(&format!("\"{digest}\"")), "{out:?}");
        assert!(!out.stdout.contains("globex-key") && !out.stderr.contains("globex-key"));
    }
    let out = tollgate(&["hash-key"], "acme-key-1\nacme-key-2\n");
    assert_eq!(
        out.stdout,
        format!(
            "sha256:{}\nsha256:{}\n",
            sha256_hex(b"acme-key-1"),
            sha256_hex(b"acme-key-2")
        )
    );
    for bad in ["", "a\n\nb\n"] {
        let out = tollgate(&["hash-key"], bad);
        assert_eq!(out.code, 2, "{bad:?}: {out:?}");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn explain_tells_consumer_plan_standing_limits_and_verdict() {
    let out = tollgate(
        &[
            "explain",
            "envoy/envoy.yaml",
            "--key",
            "wayne-key",
            "--at",
            WAYNE_AT,
        ],
        "",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "envoy/envoy.yaml: listener gateway, plugin tollgate, at 2026-11-25T13:47:00Z:\n\
         \x20 consumer  wayne\n\
         \x20 plan      trial\n\
         \x20 standing  active\n\
         \x20 limits    monthly: 3 requests per month, window 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z \
         (resets in 5d 10h 13m); when spent: 402\n\
         \x20 verdict   counted; forwarded while every limit has requests left in its window, then refused \
         with the spent limit's status until that window ends\n\
         \x20 counts    kept by each Envoy process, not in this file: GET /tollgate/usage with the key shows them\n"
    );
    assert!(!out.stdout.contains("wayne-key"));

    let cases = [
        (
            "initech-key",
            "verdict   refused with 402 Subscription suspended (urn:tollgate:problem:subscription-suspended), \
             before counting (nothing is counted)",
        ),
        (
            "umbrella-key",
            "standing  expired at 2025-01-01T00:00:00Z (expires_at)",
        ),
        (
            "globex-key",
            "standing  active until 2099-01-01T00:00:00Z (expires_at)",
        ),
        (
            "ops-key",
            "limits    none: the plan is unlimited, requests are not counted",
        ),
        (
            "acme-key-1",
            "limits    daily: 1000 requests per day, window 2026-11-25T00:00:00Z to 2026-11-26T00:00:00Z",
        ),
        (
            "acme-key-1",
            "          burst: 5 requests per 10s, window 2026-11-25T13:46:50Z to 2026-11-25T13:47:00Z",
        ),
        (
            "ACME-KEY-1",
            "verdict   refused with 401 Invalid API key (urn:tollgate:problem:invalid-credential)",
        ),
        (
            "sha256:f2a455b59b858a04c51108416af2042203cb6ac35fa4141fba4148bc856e78d4",
            "hint      this is a hashed key: pass the key itself",
        ),
    ];
    for (key, want) in cases {
        let at = if key == "acme-key-1" {
            "2026-11-25T13:46:55Z"
        } else {
            WAYNE_AT
        };
        let out = tollgate(
            &["explain", "envoy/envoy.yaml", "--key", key, "--at", at],
            "",
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(want),
            "{key}: want {want}\n{}",
            out.stdout
        );
        assert!(
            !out.stdout.contains(key),
            "the key is printed: {}",
            out.stdout
        );
    }

    // The key from stdin (out of shell history), and a keyless request.
    let out = tollgate(
        &[
            "explain",
            "envoy/envoy.yaml",
            "--key",
            "-",
            "--at",
            WAYNE_AT,
        ],
        "initech-key\n",
    );
    assert!(out.stdout.contains("consumer  initech"), "{out:?}");
    let out = tollgate(&["explain", "envoy/envoy.yaml", "--anonymous"], "");
    assert!(
        out.stdout
            .contains("verdict   refused with 401 Missing API key"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "send      the key as header x-api-key, Authorization: Bearer <key> or query ?api_key=<key>"
        ),
        "{out:?}"
    );
}

#[test]
fn explain_at_a_calendar_offset_and_in_shadow_mode() {
    let dir = TempDir::new();
    let file = dir.write(
        "plugin.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 1, "window": "day", "status": 429}]}},
            "consumers": {"a": {"plan": "p", "keys": ["k"]},
                          "b": {"plan": "p", "keys": ["kb"], "status": "suspended"}},
            "anonymous_plan": "p",
            "calendar_utc_offset": "+05:30", "mode": "shadow"}"#,
    );
    let out = tollgate(
        &[
            "explain",
            &file,
            "--key",
            "k",
            "--at",
            "2026-11-25T13:47:00Z",
        ],
        "",
    );
    assert!(
        out.stdout.contains(
            "limits    d: 1 request per day, window 2026-11-24T18:30:00Z to 2026-11-25T18:30:00Z \
             (resets in 4h 43m); when spent: 429"
        ),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("verdict   counted; forwarded while every limit"),
        "{out:?}"
    );
    let out = tollgate(&["explain", &file, "--key", "kb"], "");
    assert!(
        out.stdout.contains(
            "verdict   forwarded (shadow mode); enforced, it would be refused with 402 \
             Subscription suspended"
        ),
        "{out:?}"
    );
    let out = tollgate(&["explain", &file, "--anonymous"], "");
    assert!(
        out.stdout
            .contains("consumer  anonymous (no credential; anonymous_plan)"),
        "{out:?}"
    );
}

#[test]
fn explain_shows_payment_standing_and_remedy_links() {
    let dir = TempDir::new();
    let file = dir.write(
        "plugin.json",
        r#"{"plans": {"p": {"limits": [{"name": "d", "requests": 5, "window": "day"}],
                            "upgrade_url": "https://example.com/upgrade"}},
            "consumers": {
              "grace": {"plan": "p", "keys": ["kg"], "status": "past_due", "grace_until": "2026-11-30T00:00:00Z"},
              "lapsed": {"plan": "p", "keys": ["kl"], "status": "past_due", "grace_until": "2026-11-20T00:00:00Z",
                         "billing_url": "https://billing.example.com/lapsed"},
              "never": {"plan": "p", "keys": ["kn"], "status": "past_due"}},
            "billing_url": "https://example.com/billing"}"#,
    );
    let explain = |key: &str| {
        let out = tollgate(&["explain", &file, "--key", key, "--at", WAYNE_AT], "");
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    let grace = explain("kg");
    for line in [
        "  standing  past_due: a payment failed; admitted and counted until 2026-11-30T00:00:00Z \
         (grace_until), in 4d 10h 13m, then refused with 402 payment required\n",
        "  verdict   counted; forwarded while every limit has requests left",
        "  remedy    https://example.com/upgrade when a limit is spent (upgrade_url); \
         https://example.com/billing once refused for payment (billing_url)\n",
    ] {
        assert!(grace.contains(line), "{line}\n{grace}");
    }
    let lapsed = explain("kl");
    for line in [
        "  standing  past_due: a payment failed; the grace period ended at 2026-11-20T00:00:00Z (grace_until)\n",
        "  verdict   refused with 402 Payment required (urn:tollgate:problem:payment-required), \
         before counting (nothing is counted): The payment for the subscription of consumer lapsed \
         is past due (the grace period ended at 2026-11-20T00:00:00Z); the payment method needs attention.\n",
        "  remedy    Link: <https://billing.example.com/lapsed>; rel=\"payment urn:tollgate:rel:billing\"\n",
    ] {
        assert!(lapsed.contains(line), "{line}\n{lapsed}");
    }
    let never = explain("kn");
    assert!(
        never.contains("  standing  past_due: a payment failed; no grace period (grace_until)\n"),
        "{never}"
    );
    assert!(
        never.contains("  remedy    Link: <https://example.com/billing>;"),
        "{never}"
    );
}

#[test]
fn check_refuses_a_remedy_url_that_is_not_https_naming_the_field() {
    let dir = TempDir::new();
    let file = dir.write(
        "plugin.json",
        r#"{"plans": {"p": {"limits": [], "upgrade_url": "http://example.com/upgrade"}}}"#,
    );
    let out = tollgate(&["check", &file], "");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("plans.p.upgrade_url: `http://example.com/upgrade` is not an https URL"),
        "{out:?}"
    );
}

#[test]
fn hash_key_from_a_terminal_does_not_echo_the_key() {
    // A pseudo-terminal from python3's pty module (python3 is needed by `make` anyway): the
    // key is typed, the terminal shows the prompt and the digest, never the key.
    let script = r#"
import os, pty, select, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], ["tollgate", "hash-key"])
out = b""
def drain(until):
    global out
    deadline = time.time() + 20
    while (until is None or until not in out) and time.time() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                return
            if not chunk:
                return
            out += chunk
drain(b"(not shown): ")
# Type only once the terminal's echo is off (as a person would, after the prompt): before
# that, the terminal itself would echo what is typed ahead.
deadline = time.time() + 20
while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < deadline:
    time.sleep(0.01)
os.write(fd, b"sk_live_TYPED\n")
drain(None)
os.waitpid(pid, 0)
sys.stdout.write(out.decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_tollgate")])
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.starts_with("API key (not shown): "), "{screen:?}");
    assert!(
        screen.contains(&format!("sha256:{}", sha256_hex(b"sk_live_TYPED"))),
        "{screen:?}"
    );
    assert!(!screen.contains("TYPED"), "the key was echoed: {screen:?}");
}

#[test]
fn check_and_explain_a_fleet_mode_configuration() {
    let files = [
        "envoy/fleet/tollgate.yaml",
        "envoy/fleet/istio-wasmplugin.yaml",
        "envoy/fleet/envoy-gateway-policy.yaml",
    ];
    let out = tollgate(&[&["check"], &files[..]].concat(), "");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.matches(": accepted\n").count(),
        files.len(),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            ", store rls (cluster tollgate_quotad, domain tollgate, timeout 100ms, lease 1000)\n"
        ),
        "{out:?}"
    );
    let out = tollgate(
        &[
            "explain",
            "envoy/fleet/tollgate.yaml",
            "--key",
            "acme-key",
            "--at",
            "2026-12-02T00:00:00Z",
        ],
        "",
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("  verdict   counted by the fleet store (store.rls)"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "  counts    kept by the rate limit service behind cluster tollgate_quotad (domain \
             tollgate), shared by the fleet"
        ),
        "{out:?}"
    );
}

/// `tollgate ARGS` with extra environment variables.
fn tollgate_with_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).current_dir(repo());
    for (name, value) in env {
        command.env(name, value);
    }
    run_with_input(&mut command, "")
}

#[test]
fn check_warns_about_secrets_in_the_configuration_and_checks_variables_it_can_see() {
    let dir = TempDir::new();
    let file = dir.write(
        "secrets.json",
        r#"{"plans": {"p": {"limits": []}},
            "consumers": {"a": {"plan": "p", "keys": ["sk_live_PLAINTEXT"]}},
            "events": {"cluster": "sink", "url": "http://sink/e", "authorization": "Bearer INLINE_SECRET"},
            "entitlements": {"cluster": "cp", "path": "/c", "authorization_env": "TOLLGATE_TEST_CP_AUTH"}}"#,
    );
    // The variable is the Wasm VM's, which the command line cannot see: noted, not refused.
    let out = tollgate_with_env(&["check", &file], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.ends_with(
            "  note: environment variable `TOLLGATE_TEST_CP_AUTH` is not set here, so its value \
             was not checked; Envoy refuses the configuration unless the Wasm VM gets it \
             (vm_config.environment_variables)\n"
        ),
        "{out:?}"
    );
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{out:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{file}: warning: events.authorization: the secret is in the plugin configuration, \
             which Envoy's admin /config_dump shows; name an environment variable of the Wasm VM \
             instead (\"authorization_env\": \"TOLLGATE_EVENTS_AUTH\""
        )),
        "{out:?}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "{file}: warning: consumers: 1 plaintext key (of a)"
        )),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("INLINE_SECRET") && !out.stderr.contains("PLAINTEXT"),
        "no secret in the warnings: {out:?}"
    );

    // Set here: checked as the filter checks it, its value never printed.
    let out = tollgate_with_env(
        &["check", &file],
        &[("TOLLGATE_TEST_CP_AUTH", "Bearer ok\u{1}NOT_SHOWN")],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "{file}: configuration refused: entitlements.authorization_env: environment variable \
             `TOLLGATE_TEST_CP_AUTH` must hold a header value of visible ASCII (e.g. \"Bearer …\"; \
             no line ending) (Envoy passes it with vm_config.environment_variables)\n"
        )
    );
    let out = tollgate_with_env(
        &["check", &file],
        &[("TOLLGATE_TEST_CP_AUTH", "Bearer good")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("note:"), "{out:?}");
}
