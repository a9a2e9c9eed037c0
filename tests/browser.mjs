// The hosted pages in a real browser: headless Debian Chromium driven by playwright-core.
// Run by tests/e2e_browser.rs against `wrangler dev` with MAIL_PROVIDER=log:
//   node tests/browser.mjs BASE_URL ARTIFACT_DIR
// Walks sign-up → dev mailbox → verify → login → forgot → reset → login with the new
// password, screenshots every page into ARTIFACT_DIR, runs axe-core on each page (no serious
// or critical violations), checks that the CSP blocks an injected inline script, that
// one-time tokens leave the address bar, and that the forms work without JavaScript.
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [base, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const failures = [];
function check(condition, message) {
  if (!condition) failures.push(message);
}

async function shot(page, name) {
  await page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
}

/// axe-core, evaluated through the DevTools protocol (which the page's CSP does not govern).
async function accessible(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(serious.length === 0, `${name}: accessibility violations ${JSON.stringify(serious.map((v) => [v.id, v.nodes.map((n) => n.target)]))}`);
}

async function visit(page, name) {
  await shot(page, name);
  await accessible(page, name);
}

async function latestLink(page, email, path) {
  for (let i = 0; i < 100; i++) {
    await page.goto(`${base}/dev/mailbox`);
    const link = page.locator(`article:has-text("${email}") a[href*="${path}?token="]`).first();
    if (await link.count()) return link;
    await page.waitForTimeout(100);
  }
  throw new Error(`no ${path} link for ${email} in the dev mailbox`);
}

const email = `browser-${Date.now()}@example.com`;
const password = "correct horse battery";
const newPassword = "a brand new passphrase";
const context = await browser.newContext({ viewport: { width: 800, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
// Error pages (a 401 after a wrong password) are logged as failed loads: expected, not errors.
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) consoleErrors.push(message.text());
});

try {
  // Sign up.
  await page.goto(`${base}/signup`);
  await page.fill("#email", email);
  await page.fill("#password", "short");
  check((await page.textContent("#strength")).includes("Too short"), "the strength hint reacts to typing");
  await page.fill("#password", password);
  check((await page.textContent("#strength")).includes("Strong"), "the strength hint follows the password");
  await page.fill("#password_confirmation", password);
  await visit(page, "01-signup");
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('Check your email')");
  await visit(page, "02-signup-sent");

  // The dev mailbox has the verification mail; its link opens the verify page.
  const verifyLink = await latestLink(page, email, "/verify-email");
  await visit(page, "03-dev-mailbox");
  await verifyLink.click();
  await page.waitForSelector("h1:has-text('Confirm your email')");
  check(!page.url().includes("token="), `the token left the address bar: ${page.url()}`);
  await visit(page, "04-verify-email");

  // The CSP blocks an inline script injected into the page.
  const violation = page.waitForEvent("console", { predicate: (m) => m.text().includes("Content Security Policy"), timeout: 5000 }).catch(() => null);
  const ran = await page.evaluate(() => {
    window.__injected = false;
    const script = document.createElement("script");
    script.textContent = "window.__injected = true";
    document.body.appendChild(script);
    return window.__injected;
  });
  check(ran === false, "an injected inline script ran despite the CSP");
  check((await violation) !== null, "the CSP reported the injected script");
  consoleErrors.length = 0;

  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('Email confirmed')");
  await visit(page, "05-email-confirmed");

  // Log in.
  await page.goto(`${base}/login`);
  await page.fill("#email", email);
  await page.fill("#password", "not the password");
  await page.click("button[type=submit]");
  await page.waitForSelector("#error");
  check((await page.textContent("#error")).includes("not right"), "a wrong password is explained in words");
  await visit(page, "06-login-error");
  await page.fill("#password", password);
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('You are signed in')");
  await visit(page, "07-signed-in");

  // Forgot password → reset.
  await page.goto(`${base}/forgot-password`);
  await page.fill("#email", email);
  await visit(page, "08-forgot-password");
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('Check your email')");
  const resetLink = await latestLink(page, email, "/reset-password");
  await resetLink.click();
  await page.waitForSelector("h1:has-text('Choose a new password')");
  check(!page.url().includes("token="), `the reset token left the address bar: ${page.url()}`);
  await page.fill("#password", newPassword);
  await page.fill("#password_confirmation", "something else entirely");
  await page.click("button[type=submit]");
  check((await page.locator("h1").textContent()).includes("Choose a new password"), "mismatched passwords are caught before sending");
  await page.fill("#password_confirmation", newPassword);
  await visit(page, "09-reset-password");
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:has-text('Password changed')");
  await visit(page, "10-password-changed");

  // The new password works; without JavaScript, too.
  const noScript = await browser.newContext({ javaScriptEnabled: false });
  const plain = await noScript.newPage();
  await plain.goto(`${base}/login`);
  await plain.fill("#email", email);
  await plain.fill("#password", newPassword);
  await plain.click("button[type=submit]");
  await plain.waitForSelector("h1:has-text('You are signed in')");
  await noScript.close();

  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);
} catch (err) {
  failures.push(`${err.stack ?? err}`);
  await shot(page, "failure").catch(() => {});
} finally {
  await browser.close();
}

if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(JSON.stringify({ ok: true, email }));
