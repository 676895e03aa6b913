// What Puppeteer does in a browser, as data to compare directly and through a browserd lease
// (tests/control/test_transparency.py): popups and the dialogs they open, navigation, frames,
// dialogs, a download into its own folder, request interception, a CDP session of its own,
// and input.
//
//   node tests/js/puppeteer_behaviour.mjs BROWSER_WS_ENDPOINT SITE_BASE
//
// Prints one JSON line. Exits non-zero (with the error on stderr) when anything fails.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const [endpoint, base] = process.argv.slice(2);
if (!endpoint || !base) {
  console.error("usage: puppeteer_behaviour.mjs BROWSER_WS_ENDPOINT SITE_BASE");
  process.exit(2);
}

const timeout = 15000;
const browser = await puppeteer.connect({ browserWSEndpoint: endpoint, protocolTimeout: 20000 });
const context = await browser.createBrowserContext();
const seen = {};
try {
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);

  // popups: the "popup" event, then a dialog the popup opens reaches the popup's listener
  let opened = 0;
  let dialogs = 0;
  await page.goto(`${base}/empty`);
  const within = (promise, what) => Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(what)), timeout)),
  ]);
  for (let round = 0; round < 3; round++) {
    for (const expression of ["window.open('/popup/p') !== null", "window.open('') !== null"]) {
      const popupPromise = new Promise((resolve) => page.once("popup", resolve));
      await page.evaluate(expression);
      const popup = await within(popupPromise, `no popup event for ${expression}`);
      opened += 1;
      const dialogPromise = new Promise((resolve) => popup.once("dialog", resolve));
      await popup.evaluate(() => { setTimeout(() => alert("x"), 0); });
      const dialog = await within(dialogPromise, `no dialog in the popup of ${expression}`);
      dialogs += 1;
      await dialog.dismiss();
      await popup.close();
    }
  }
  seen.popups = { opened, dialogs };

  // navigation and frames
  const response = await page.goto(`${base}/frames`, { waitUntil: "load" });
  seen.navigation = [response.status(), await page.title()];
  seen.frames = (await Promise.all(page.frames().map(async (frame) =>
    [frame.name(), frame.url().replace(base, ""), await frame.evaluate(() => document.body.innerText)],
  ))).sort();

  // dialogs: alert, confirm, prompt, answered by the client
  const answers = [];
  const answer = async (dialog) => {
    answers.push([dialog.type(), dialog.message()]);
    await (dialog.type() === "prompt" ? dialog.accept("typed") : dialog.accept());
  };
  page.on("dialog", answer);
  const results = await page.evaluate(() => [alert("a"), confirm("c"), prompt("p", "default")]);
  page.off("dialog", answer);
  seen.dialogs = [answers, results];

  // a download into the client's own folder (its context's download behaviour)
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), "pptr-downloads-"));
  try {
    const browserSession = await browser.target().createCDPSession();
    await browserSession.send("Browser.setDownloadBehavior", {
      behavior: "allow", browserContextId: context.id, downloadPath: folder, eventsEnabled: true,
    });
    const finished = new Promise((resolve) => browserSession.on("Browser.downloadProgress",
      (event) => { if (event.state === "completed") resolve(); }));
    await page.setContent(`<a href="${base}/download" download>get</a>`);
    await page.click("a");
    await within(finished, "the download did not finish");
    seen.download = fs.readdirSync(folder).map((name) =>
      [name, fs.readFileSync(path.join(folder, name), "utf8")]);
    await browserSession.detach();
  } finally {
    fs.rmSync(folder, { recursive: true, force: true });
  }

  // request interception: abort the image, fulfil a page
  await page.setRequestInterception(true);
  const aborted = [];
  const intercept = (request) => {
    if (request.url().endsWith("/pixel.png")) {
      aborted.push(request.url().replace(base, ""));
      request.abort();
    } else if (request.url().endsWith("/intercepted")) {
      request.respond({ status: 201, contentType: "text/html", body: "<title>fulfilled</title>" });
    } else {
      request.continue();
    }
  };
  page.on("request", intercept);
  await page.goto(`${base}/plain`, { waitUntil: "load" });
  const fulfilled = await page.goto(`${base}/intercepted`);
  seen.interception = { status: fulfilled.status(), aborted };
  page.off("request", intercept);
  await page.setRequestInterception(false);

  // a CDP session of its own
  const session = await page.createCDPSession();
  const reply = await session.send("Runtime.evaluate", { expression: "6 * 7", returnByValue: true });
  seen.cdpSession = reply.result.value;
  await session.detach();

  // input
  await page.goto(`${base}/form`);
  await page.click("#name");
  await page.keyboard.type("abc");
  await page.keyboard.press("Backspace");
  await page.mouse.click(90, 80);
  seen.input = [await page.title(), await page.evaluate(() => window.keys)];

  console.log(JSON.stringify(seen));
} finally {
  await context.close();
  await browser.disconnect();
}
