// The provider's hosted pages in a real browser: headless Debian Chromium (playwright-core)
// runs a code flow the way a user does. The browser logs in, sees the consent page naming the
// client and the scopes, clicks allow and lands on the client's redirect URI with code, state
// and iss (a loopback HTTP server in this script answers the callback); the code is then
// redeemed. A second, first-party client (skip_consent) then gets a
// code with no page at all (SSO), and a third client's deny gives access_denied. axe-core
// checks the login and consent pages; screenshots land in the artifact folder.
//
// Usage: node tests/rp_browser.mjs CONFIG_JSON
//   CONFIG_JSON = {"issuer", "email", "password", "artifacts", "rp_port", "clients": {"consenting",
//                  "first_party", "denied": {"client_id", "client_secret", "client_name", "redirect_uri"}}}
// Prints one JSON line: [{"name", "ok", "error"?, "seconds"}]; exits 1 if any check failed.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2]);
const { issuer, clients, artifacts } = config;
mkdirSync(artifacts, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const results = [];

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true, seconds: (Date.now() - started) / 1000 });
  } catch (error) {
    results.push({ name, ok: false, error: `${error.stack ?? error}`, seconds: (Date.now() - started) / 1000 });
    await shot(`failure-${results.length}`).catch(() => {});
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// 32 bytes: 43 base64url characters, the shortest verifier RFC 7636 §4.1 allows.
const random = () => randomBytes(32).toString("base64url");
const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 800, height: 900 } });
// The relying parties' callback: a loopback server, as a real RP's page would be.
const rp = createServer((request, response) => {
  response.writeHead(200, { "content-type": "text/html" });
  response.end("<!doctype html><title>RP</title><h1>Back at the relying party</h1>");
});
await new Promise((resolve) => rp.listen(config.rp_port, "127.0.0.1", resolve));
const page = await context.newPage();
const consoleErrors = [];
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) consoleErrors.push(message.text());
});

async function shot(name) {
  await page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
}

async function accessible(name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert(serious.length === 0, `${name}: accessibility violations ${JSON.stringify(serious.map((v) => [v.id, v.nodes.map((n) => n.target)]))}`);
}

function authorizationUrl(client, scope) {
  const verifier = random();
  const params = new URLSearchParams({
    response_type: "code",
    client_id: client.client_id,
    redirect_uri: client.redirect_uri,
    scope,
    state: random(),
    nonce: random(),
    code_challenge: createHash("sha256").update(verifier).digest("base64url"),
    code_challenge_method: "S256",
  });
  return { url: `${discovery.authorization_endpoint}?${params}`, state: params.get("state"), verifier };
}

/// Where the browser is once it has left the issuer: the callback's parameters.
async function landedOn(client) {
  await page.waitForURL((url) => url.href.startsWith(client.redirect_uri), { timeout: 15000 });
  return new URL(page.url()).searchParams;
}

async function redeem(client, code, verifier) {
  const response = await fetch(discovery.token_endpoint, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString("base64")}`,
    },
    body: new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: client.redirect_uri, code_verifier: verifier }),
  });
  const body = await response.json();
  assert(response.status === 200, `token endpoint: ${response.status} ${JSON.stringify(body)}`);
  assert(body.id_token && body.access_token, `tokens: ${JSON.stringify(body)}`);
}

let signedIn = false;
await check("login, consent naming the client and scopes, allow, callback with code/state/iss", async () => {
  const client = clients.consenting;
  const flow = authorizationUrl(client, "openid email");
  await page.goto(flow.url);
  await page.waitForSelector("input[name=password]");
  await shot("10-provider-login");
  await accessible("login page");
  await page.fill("input[name=email]", config.email);
  await page.fill("input[name=password]", config.password);
  await page.locator("form:has(input[name=password])").locator("button, input[type=submit]").first().click();
  await page.waitForSelector("button[name=decision][value=allow]");
  signedIn = true; // the SSO session exists from here on, whatever the consent page does
  const text = await page.locator("body").innerText();
  assert(text.includes(client.client_name), `the consent page does not name the client ${client.client_name}: ${text}`);
  assert(/e-?mail/i.test(text), `the consent page does not name the email scope: ${text}`);
  assert(await page.locator("button[name=decision][value=deny]").count() === 1, "no deny button");
  await shot("20-consent");
  await accessible("consent page");
  await page.click("button[name=decision][value=allow]");
  const params = await landedOn(client);
  await shot("30-callback");
  assert(params.get("code"), `no code: ${page.url()}`);
  assert(params.get("state") === flow.state, `state ${params.get("state")}`);
  assert(params.get("iss") === issuer, `iss ${params.get("iss")}`);
  await redeem(client, params.get("code"), flow.verifier);
  const cookies = await context.cookies(issuer);
  const session = cookies.filter((cookie) => !cookie.name.includes("csrf"));
  assert(session.length >= 1, `no SSO cookie: ${JSON.stringify(cookies)}`);
  assert(session.some((cookie) => cookie.httpOnly && cookie.sameSite === "Lax"), `no HttpOnly SameSite=Lax SSO cookie: ${JSON.stringify(session)}`);
});

await check("SSO: a first-party (skip_consent) client gets a code with no page", async () => {
  assert(signedIn, "the login of the first flow failed");
  const client = clients.first_party;
  const flow = authorizationUrl(client, "openid");
  const pages = [];
  const record = (frame) => { if (frame === page.mainFrame()) pages.push(frame.url()); };
  page.on("framenavigated", record);
  await page.goto(flow.url);
  const params = await landedOn(client);
  page.off("framenavigated", record);
  const shown = pages.filter((url) => url.startsWith(issuer) && !url.startsWith(discovery.authorization_endpoint));
  assert(shown.length === 0, `pages shown on the way: ${shown}`);
  assert(params.get("code") && params.get("state") === flow.state && params.get("iss") === issuer, page.url());
  await redeem(client, params.get("code"), flow.verifier);
});

await check("deny on the consent page gives access_denied", async () => {
  assert(signedIn, "the login of the first flow failed");
  const client = clients.denied;
  const flow = authorizationUrl(client, "openid email");
  await page.goto(flow.url);
  await page.waitForSelector("button[name=decision][value=deny]");
  assert(await page.locator("input[name=password]").count() === 0, "asked for the password inside an SSO session");
  await shot("40-consent-before-deny");
  await page.click("button[name=decision][value=deny]");
  const params = await landedOn(client);
  await shot("50-denied-callback");
  assert(params.get("error") === "access_denied", `error ${params.get("error")}: ${page.url()}`);
  assert(params.get("state") === flow.state && !params.get("code"), page.url());
});

await check("no console errors on the hosted pages", async () => {
  assert(consoleErrors.length === 0, consoleErrors.join(" | "));
});

await browser.close();
rp.close();
console.log(JSON.stringify(results));
process.exit(results.every((result) => result.ok) ? 0 : 1);
