// Puppeteer's browser.close() over a browserd lease: with the default close policy the daemon
// answers Browser.close itself and lets this client go, and the runtime's browser lives on.
//
//   node tests/js/puppeteer_close.mjs BROWSER_WS_ENDPOINT
//
// Prints one JSON line: {"closed", "connected", "ms"}.
import puppeteer from "puppeteer-core";

const browser = await puppeteer.connect({ browserWSEndpoint: process.argv[2],
                                          protocolTimeout: 20000 });
const page = await browser.newPage();
await page.goto("about:blank");
const started = Date.now();
await browser.close();
console.log(JSON.stringify({ closed: true, connected: browser.connected,
                             ms: Date.now() - started }));
