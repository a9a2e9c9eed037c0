//! The hosted pages in headless Chromium (tests/browser.mjs, playwright-core and axe-core)
//! against `wrangler dev` with `MAIL_PROVIDER=log`, whose dev mailbox carries the links.
//! Screenshots land in test-artifacts/browser/.

use std::process::Command;

use crate::e2e::{repository, tool_path, MailSink, Worker};

#[test]
fn hosted_pages_in_a_real_browser() {
    let sink = MailSink::start();
    let worker = Worker::start_with(&sink, &["MAIL_PROVIDER:log"]);
    let artifacts = repository().join("test-artifacts/browser");
    let _ = std::fs::remove_dir_all(&artifacts);
    let output = Command::new("node")
        .arg("tests/browser.mjs")
        .arg(worker.url(""))
        .arg(&artifacts)
        .current_dir(repository())
        .env("PATH", tool_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "browser test failed:\n{}\n{}\nworker log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        worker.log()
    );
    for screenshot in ["01-signup", "04-verify-email", "09-reset-password"] {
        assert!(artifacts.join(format!("{screenshot}.png")).exists(), "{screenshot}");
    }
}

#[test]
fn the_dev_mailbox_is_absent_with_a_real_provider() {
    let sink = MailSink::start();
    let worker = Worker::start_with(&sink, &[]);
    let response = crate::e2e::client().get(worker.url("/dev/mailbox")).send().unwrap();
    assert_eq!(response.status(), 404);
}
