// Fast reconnects with a third-party client: @xmpp/client 0.14 logs in over XMPP-over-WebSocket
// with XEP-0388 SASL2 and XEP-0386 Bind2, and asks for a XEP-0484 FAST token by itself. A second
// client instance (same user-agent id, wrong password) then logs in with the token alone
// (HT-SHA-256-NONE). After the test revokes the token (a line on stdin) a third attempt must
// be refused. One JSON line per event on stdout.
//
//   node sasl2_fast.mjs ws://127.0.0.1:PORT/xmpp-websocket DOMAIN USERNAME PASSWORD RESOURCE
import { client, xml } from "@xmpp/client";
import { createInterface } from "node:readline";

const [service, domain, username, password, resource] = process.argv.slice(2);
const report = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Tokens belong to one client installation, named by its user-agent id.
const userAgent = () => xml("user-agent", { id: "7d1e2c1a-5b7e-4c55-9d1e-0f3c2b9a8e61" });
let token = null;

function make(pass) {
  const xmpp = client({ service, domain, username, password: pass, resource, userAgent: userAgent() });
  xmpp.fast.fetchToken = async () => token;
  xmpp.fast.saveToken = async (t) => {
    token = t;
  };
  xmpp.fast.deleteToken = async () => {
    token = null;
  };
  xmpp.on("error", () => {});
  return xmpp;
}

async function login(step, pass) {
  const xmpp = make(pass);
  const online = new Promise((resolve) => xmpp.once("online", resolve));
  try {
    await xmpp.start();
    const jid = (await online).toString();
    report({
      event: "online",
      step,
      jid,
      token: token?.mechanism ?? null,
      expiry: token?.expiry ?? null,
      sm: xmpp.streamManagement.enabled,
    });
    await xmpp.stop();
    return true;
  } catch (err) {
    report({ event: "refused", step, condition: err.condition ?? null, error: String(err) });
    await xmpp.stop().catch(() => {});
    return false;
  }
}

// 1. Password (SCRAM-SHA-1 over SASL2); the token comes with <success/>.
await login("password", password);
// 2. The token alone: the password given is wrong, so only FAST can succeed.
await login("token", "not-the-password");
// 3. The test revokes the token, then tells us.
await lines.next();
await login("revoked", "not-the-password");
process.exit(0);
