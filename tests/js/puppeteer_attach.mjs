// Attach Puppeteer to a browserd runtime, open a page, read its title, and leave.
//
//   node tests/js/puppeteer_attach.mjs browserURL|browserWSEndpoint ENDPOINT PAGE_URL
//
// Prints one JSON line: {"title", "pages", "version"}. Exits non-zero (with the error on
// stderr) when anything fails. disconnect() leaves the browser running, as it should over a
// lease: the runtime belongs to the daemon.
import puppeteer from "puppeteer-core";

const [how, endpoint, pageUrl] = process.argv.slice(2);
if (!["browserURL", "browserWSEndpoint"].includes(how) || !endpoint || !pageUrl) {
  console.error("usage: puppeteer_attach.mjs browserURL|browserWSEndpoint ENDPOINT PAGE_URL");
  process.exit(2);
}

const browser = await puppeteer.connect({ [how]: endpoint, protocolTimeout: 20000 });
try {
  const version = await browser.version();
  const page = await browser.newPage();
  await page.goto(pageUrl, { waitUntil: "load", timeout: 20000 });
  const title = await page.title();
  const pages = (await browser.pages()).length;
  await page.close();
  console.log(JSON.stringify({ title, pages, version }));
} finally {
  await browser.disconnect();
}
