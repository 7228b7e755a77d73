// A browser-style client for Franca's interop test: strophe.js over BOSH (XEP-0124/XEP-0206).
// It logs in, accepts a subscription, reports the presence it sees and answers every chat
// message with "echo: <body>". One JSON line per event on stdout, for the test.
//
//   node bosh_chat.mjs http://127.0.0.1:PORT/http-bind DOMAIN USERNAME PASSWORD RESOURCE
//
// strophe.js's Node build brings its own DOM (@xmldom/xmldom) but, like any BOSH client, it
// speaks HTTP through the browser's XMLHttpRequest, which Node lacks. NodeXHR below stands in
// for the browser: the few members strophe uses, over node:http, with `responseXML` parsed by
// the DOMParser strophe installed. It does nothing XMPP- or BOSH-specific.
import http from "node:http";
import { Strophe, $msg, $pres } from "strophe.js";

const [service, domain, username, password, resource] = process.argv.slice(2);
const report = (event) => process.stdout.write(JSON.stringify(event) + "\n");

class NodeXHR {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.responseText = "";
    this.responseXML = null;
    this.onreadystatechange = null;
    this._headers = {};
    this._responseHeaders = "";
  }
  overrideMimeType() {}
  open(method, url) {
    this._method = method;
    this._url = new URL(url);
    this._state(1);
  }
  setRequestHeader(name, value) {
    this._headers[name] = value;
  }
  getAllResponseHeaders() {
    return this._responseHeaders;
  }
  send(data) {
    const body = Buffer.from(data ?? "", "utf8");
    const headers = { ...this._headers, "Content-Length": body.length };
    this._request = http.request(this._url, { method: this._method, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        if (this._aborted) return;
        this.status = res.statusCode;
        this._responseHeaders = Object.entries(res.headers)
          .map(([k, v]) => `${k}: ${v}`)
          .join("\r\n");
        this.responseText = Buffer.concat(chunks).toString("utf8");
        this.responseXML = this.responseText
          ? new DOMParser().parseFromString(this.responseText, "text/xml")
          : null;
        this._state(4);
      });
    });
    // A network error completes the request with status 0, as in a browser.
    this._request.on("error", () => {
      if (!this._aborted) this._state(4);
    });
    this._request.end(body);
  }
  abort() {
    this._aborted = true;
    this._request?.destroy();
  }
  _state(s) {
    this.readyState = s;
    this.onreadystatechange?.();
  }
}
globalThis.XMLHttpRequest = NodeXHR;

// INFO goes to console.info, which is stdout in Node; keep stdout for the events.
Strophe.setLogLevel(Strophe.LogLevel.WARN);

const conn = new Strophe.Connection(service);
const S = Strophe.Status;

conn.addHandler(
  (stanza) => {
    const from = stanza.getAttribute("from");
    const type = stanza.getAttribute("type");
    if (type === "subscribe") {
      conn.send($pres({ to: from, type: "subscribed" }));
      conn.send($pres({ to: from, type: "subscribe" }));
    }
    report({ event: "presence", from, type: type ?? "available" });
    return true;
  },
  null,
  "presence",
);

conn.addHandler(
  (stanza) => {
    const body = stanza.getElementsByTagName("body")[0];
    if (body) {
      const from = stanza.getAttribute("from");
      report({ event: "message", from, body: body.textContent });
      conn.send($msg({ to: from, type: "chat" }).c("body").t(`echo: ${body.textContent}`));
    }
    return true;
  },
  null,
  "message",
);

let stopping = false;
conn.connect(`${username}@${domain}/${resource}`, password, (status, condition) => {
  if (status === S.CONNECTED) {
    conn.send($pres());
    report({ event: "online", jid: conn.jid });
  } else if (status === S.DISCONNECTED && stopping) {
    process.exit(0);
  } else if ([S.CONNFAIL, S.AUTHFAIL, S.ERROR, S.DISCONNECTED].includes(status)) {
    report({ event: "error", status, condition });
    process.exit(2);
  }
});

// Stop on stdin EOF (the test closes it) so no process outlives the test; the terminate
// request ends the session (XEP-0124 §13).
process.stdin.on("end", () => {
  stopping = true;
  conn.disconnect("done");
  setTimeout(() => process.exit(3), 10_000).unref();
});
process.stdin.resume();
