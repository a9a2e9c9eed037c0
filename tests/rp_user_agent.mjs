// A tiny generic user agent for the relying-party drivers: a cookie jar for the issuer,
// redirects followed by hand, and the hosted pages' HTML forms read and posted as a browser
// would (every hidden input, the fields filled in, the button pressed, `Origin` of the issuer).
// It knows the contract's field names only: `email` and `password` on the login form,
// `decision=allow|deny` on the consent form, `decision=logout` on the logout confirmation.

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

export function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, entity) => {
    if (entity[0] === "#") {
      const code = entity[1] === "x" || entity[1] === "X" ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10);
      return Number.isFinite(code) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[entity.toLowerCase()] ?? whole;
  });
}

function attributes(source) {
  const attrs = {};
  const pattern = /([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?/g;
  for (const match of source.matchAll(pattern)) {
    attrs[match[1].toLowerCase()] = decodeEntities(match[2] ?? match[3] ?? match[4] ?? "");
  }
  return attrs;
}

/// The forms of a page: action (absolute), method, fields a browser would send, buttons.
export function parseForms(html, pageUrl) {
  const cleaned = html
    .replace(/<!--[\s\S]*?-->/g, "")
    .replace(/<script\b[\s\S]*?<\/script>/gi, "")
    .replace(/<style\b[\s\S]*?<\/style>/gi, "");
  const forms = [];
  let current = null;
  for (const match of cleaned.matchAll(/<(\/?)([a-zA-Z]+)([^>]*)>/g)) {
    const [, closing, rawName, rest] = match;
    const name = rawName.toLowerCase();
    if (name === "form" && !closing) {
      const attrs = attributes(rest);
      current = { action: new URL(attrs.action ?? "", pageUrl).href, method: (attrs.method ?? "get").toLowerCase(), fields: [], inputs: [], buttons: [] };
    } else if (name === "form" && closing) {
      if (current) forms.push(current);
      current = null;
    } else if (current && !closing && name === "input") {
      const attrs = attributes(rest);
      if (!attrs.name) continue;
      const type = (attrs.type ?? "text").toLowerCase();
      current.inputs.push(attrs.name);
      if (type === "submit") current.buttons.push([attrs.name, attrs.value ?? ""]);
      else if ((type === "checkbox" || type === "radio") && !("checked" in attrs)) continue;
      else if (!["button", "reset", "file", "image"].includes(type)) current.fields.push([attrs.name, attrs.value ?? ""]);
    } else if (current && !closing && name === "button") {
      const attrs = attributes(rest);
      if (attrs.name) current.buttons.push([attrs.name, attrs.value ?? ""]);
    }
  }
  if (current) forms.push(current);
  return forms;
}

export class UserAgent {
  constructor(issuer) {
    this.issuer = new URL(issuer);
    this.jar = new Map();
  }

  atIssuer(url) {
    return new URL(url).origin === this.issuer.origin;
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers ?? {});
    headers.set("accept", "text/html,application/xhtml+xml");
    if (this.atIssuer(url) && this.jar.size) {
      headers.set("cookie", [...this.jar].map(([name, value]) => `${name}=${value}`).join("; "));
    }
    const response = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair, ...attrs] = cookie.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((attr) => /^\s*max-age=(0|-)/i.test(attr));
      if (expired || !value) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    const location = response.headers.get("location");
    return { url, status: response.status, contentType: response.headers.get("content-type") ?? "", body: await response.text(),
      location: location ? new URL(location, url).href : null };
  }

  get(url) {
    return this.request(url, { headers: { "sec-fetch-site": this.atIssuer(url) ? "same-origin" : "cross-site", "sec-fetch-mode": "navigate" } });
  }

  submit(form, filled = {}, button = null) {
    const fields = new URLSearchParams();
    const names = new Set(Object.keys(filled));
    for (const [name, value] of form.fields) if (!names.has(name)) fields.append(name, value);
    for (const [name, value] of Object.entries(filled)) fields.append(name, value);
    if (button) fields.append(button[0], button[1]);
    const headers = { origin: this.issuer.origin, "sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate",
      "content-type": "application/x-www-form-urlencoded" };
    if (form.method === "get") {
      const url = new URL(form.action);
      url.search = fields.toString();
      return this.request(url.href, { headers });
    }
    return this.request(form.action, { method: "POST", headers, body: fields.toString() });
  }

  /// Follows redirects and pages until a redirect leaves the issuer (the callback) or a page
  /// asks for something the act does not do. act = {user, consent: "allow"|"deny", confirmLogout}.
  async follow(reply, act) {
    const journey = { logins: 0, consents: 0, confirmations: 0, consentText: [], callback: null, stopped: null };
    for (let hop = 0; hop < 20; hop++) {
      if ([301, 302, 303, 307, 308].includes(reply.status) && reply.location) {
        if (!this.atIssuer(reply.location)) {
          journey.callback = reply.location;
          return journey;
        }
        reply = await this.get(reply.location);
        continue;
      }
      if (reply.status === 200 && reply.contentType.startsWith("text/html")) {
        const forms = parseForms(reply.body, reply.url);
        const login = forms.find((form) => form.inputs.includes("password"));
        const consent = forms.find((form) => form.buttons.some(([n, v]) => n === "decision" && v === "allow"));
        const confirm = forms.find((form) => form.buttons.some(([n, v]) => n === "decision" && v === "logout"));
        if (login) {
          journey.logins++;
          if (act.user && journey.logins <= 3) {
            reply = await this.submit(login, { email: act.user.email, password: act.user.password });
            continue;
          }
        } else if (consent) {
          journey.consents++;
          journey.consentText.push(reply.body.replace(/<[^>]+>/g, " "));
          if (act.consent) {
            reply = await this.submit(consent, {}, ["decision", act.consent]);
            continue;
          }
        } else if (confirm) {
          journey.confirmations++;
          if (act.confirmLogout) {
            reply = await this.submit(confirm, {}, ["decision", "logout"]);
            continue;
          }
        }
      }
      journey.stopped = `${reply.status} ${reply.url}: ${reply.body.replace(/<[^>]+>/g, " ").replace(/\s+/g, " ").slice(0, 300)}`;
      return journey;
    }
    throw new Error("more than 20 redirects and pages");
  }

  async authorize(url, user, consent = "allow") {
    return this.follow(await this.get(url), { user, consent });
  }
}
