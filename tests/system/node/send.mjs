// Send calls to xtag with a Node server SDK, as a site's backend would:
//   node send.mjs <segment|rudderstack> <collector URL> <write key> '<JSON list of [method, args]>'
// Prints the failures the SDK reported (a JSON list) and exits 0.
import { createRequire } from "node:module";
import { Analytics as Segment } from "@segment/analytics-node";

const require = createRequire(import.meta.url);
const RudderStack = require("@rudderstack/rudder-sdk-node");
const [sdk, host, writeKey, callsJson] = process.argv.slice(2);
const calls = JSON.parse(callsJson);
const failures = [];

if (sdk === "segment") {
  const client = new Segment({ writeKey, host, flushAt: 50, maxRetries: 1 });
  client.on("error", (error) => failures.push(String(error?.reason ?? error)));
  for (const [method, args] of calls) client[method](args);
  await client.closeAndFlush({ timeout: 15000 });
} else {
  const client = new RudderStack(writeKey, {
    dataPlaneUrl: host,
    flushAt: 50,
    maxRetries: 1,
    errorHandler: (error) => failures.push(String(error)),
  });
  for (const [method, args] of calls) client[method](args);
  await client.flush();
}
console.log(JSON.stringify(failures));
