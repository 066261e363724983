// Drive /playground in headless Chromium (Debian's chromium, through
// playwright-core): two messages with a streamed answer, a client action
// answered in the page, a tool confirmation allowed, a screenshot.
//
//   node playground.mjs BASE_URL SCREENSHOT.png
// PLAYWRIGHT_CORE: the playwright-core package's directory; CHROMIUM: the browser.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [base, screenshot] = process.argv.slice(2);

function check(ok, message) {
  if (!ok) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // No sandbox as root; nothing reaching for the network this machine lacks.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.setDefaultTimeout(30000);
  const failed = [];
  page.on("requestfailed", (r) => failed.push(r.url()));
  page.on("pageerror", (e) => failed.push("page error: " + e.message));

  await page.goto(base + "/playground");
  // The page lists agents as it starts; let that finish, so the listing
  // asked for below is the one the page keeps (the page also ignores a
  // listing answered after a later one).
  await page.waitForFunction(() => /agent\(s\)|Cannot list/.test(document.getElementById("status")?.textContent || ""));
  // Keyboard and labels: every control is reachable by its label.
  await page.getByLabel("Project or organisation").fill("p");
  await page.getByRole("button", { name: "Load agents" }).click();
  await page.waitForFunction(() => [...document.querySelectorAll("#agent option")].some((o) => o.value === "tooly"));
  await page.getByLabel("Agent").selectOption("tooly");

  // Count how often the answer's text changes while it streams.
  await page.evaluate(() => {
    window.pieces = 0;
    new MutationObserver((records) => {
      for (const r of records) {
        const t = r.target.nodeType === 3 ? r.target.parentElement : r.target;
        if (t && t.closest && t.closest(".answer")) window.pieces++;
      }
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true });
  });

  // 1. A plain message: the answer arrives in pieces.
  await page.getByLabel("Message", { exact: true }).fill("hello there");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector(".msg.agent .answer")?.textContent === "Nice to meet you, hello there");
  const pieces = await page.evaluate(() => window.pieces);
  check(pieces >= 2, "the answer arrived in " + pieces + " piece(s)");
  const cursor = await page.textContent("#c-kid");
  check(cursor === "k1", "the cursor's key id is shown: " + cursor);
  check(/characters/.test(await page.textContent("#c-size")), "the cursor's size is shown");
  check(/^\d{4}-/.test(await page.textContent("#c-exp")), "the cursor's expiry is shown");

  // 2. The agent asks the user through a client action; the page answers it.
  await page.getByLabel("Message", { exact: true }).fill("please ask me");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  const result = page.locator(".action-result");
  await result.waitFor();
  await result.fill("blue");
  await page.getByRole("button", { name: "Send result" }).click();
  await page.getByText("You chose blue").waitFor();

  // 3. A server tool that needs confirmation: allowed in the page, then it runs.
  await page.getByLabel("Message", { exact: true }).fill("calculate 6*7");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.getByRole("button", { name: "Allow" }).click();
  await page.getByText("The answer is 42").waitFor();
  check((await page.locator(".tool").count()) >= 2, "tool calls and results are shown");
  check((await page.locator("#timeline svg rect").count()) >= 2, "the turn's timeline is drawn");
  check(Number(await page.textContent("#u-total")) > 0, "tokens are counted");

  await page.screenshot({ path: screenshot, fullPage: true });

  // 4. Edit and resend the first message: the conversation forks from the
  //    cursor it was sent with, and the later turns leave the page.
  const forkFrom = await page.textContent("#c-size");
  await page.getByRole("button", { name: /Edit and resend/ }).first().click();
  check((await page.getByLabel("Message", { exact: true }).inputValue()) === "hello there", "the message is back in the box");
  check((await page.locator(".msg").count()) === 0, "the later turns left the page");
  await page.getByLabel("Message", { exact: true }).fill("hello again");
  await page.keyboard.press("Enter");
  await page.getByText("Nice to meet you, hello again").waitFor();
  check((await page.locator(".msg.agent").count()) === 1, "one turn in the fork");
  check((await page.textContent("#c-size")) !== forkFrom, "a new cursor");

  // 5. The Quant API: a session instead of a cursor.
  await page.getByLabel("API").selectOption("quant");
  await page.getByLabel("Message", { exact: true }).fill("hello quant");
  await page.keyboard.press("Enter");
  await page.getByText("Nice to meet you, hello quant").waitFor();
  check((await page.textContent("#c-session")).length > 8, "the session is shown");
  check(failed.length === 0, "failed requests or page errors: " + failed.join(", "));
  console.log("playground: ok (" + pieces + " pieces)");
} catch (e) {
  // What the page showed, for the failure message.
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    const shown = await page.evaluate(() => ({
      agent: document.getElementById("agent")?.value,
      status: document.getElementById("status")?.textContent,
      log: document.getElementById("log")?.innerText,
    })).catch(() => null);
    console.error("the page showed: " + JSON.stringify(shown));
  }
  throw e;
} finally {
  await browser.close();
}
