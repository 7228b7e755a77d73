// A browser-style client for Franca's interop test: @xmpp/client over XMPP-over-WebSocket
// (RFC 7395). It logs in, accepts a subscription, reports the presence it sees and answers
// every chat message with "echo: <body>". One JSON line per event on stdout, for the test.
//
//   node ws_chat.mjs ws://127.0.0.1:PORT/xmpp-websocket DOMAIN USERNAME PASSWORD RESOURCE
import { client, xml } from "@xmpp/client";

const [service, domain, username, password, resource] = process.argv.slice(2);
const report = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const xmpp = client({ service, domain, username, password, resource });

xmpp.on("error", (err) => {
  report({ event: "error", error: String(err) });
  process.exit(2);
});

xmpp.on("stanza", async (stanza) => {
  if (stanza.is("presence")) {
    const type = stanza.attrs.type;
    if (type === "subscribe") {
      await xmpp.send(xml("presence", { to: stanza.attrs.from, type: "subscribed" }));
      await xmpp.send(xml("presence", { to: stanza.attrs.from, type: "subscribe" }));
    }
    report({ event: "presence", from: stanza.attrs.from, type: type ?? "available" });
  } else if (stanza.is("message") && stanza.getChild("body")) {
    const body = stanza.getChildText("body");
    report({ event: "message", from: stanza.attrs.from, body });
    await xmpp.send(
      xml("message", { to: stanza.attrs.from, type: "chat" }, xml("body", {}, `echo: ${body}`)),
    );
  }
});

xmpp.on("online", async (address) => {
  await xmpp.send(xml("presence"));
  report({ event: "online", jid: address.toString() });
});

// Stop on stdin EOF (the test closes it) so no process outlives the test.
process.stdin.on("end", async () => {
  await xmpp.stop().catch(() => {});
  process.exit(0);
});
process.stdin.resume();

xmpp.start().catch((err) => {
  report({ event: "error", error: String(err) });
  process.exit(2);
});
