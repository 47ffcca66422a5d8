// scripts/browser-test's driver: headless Chromium (the system's, through
// playwright-core) loads the test page and waits for its verdict.
// Usage: node run.mjs PAGE_URL USER_DATA_DIR TIMEOUT_MS SERVER_LOG
// Prints the page's console and its check lines, then
// `browser-test: N passed, M failed`; exits 1 on any failure or timeout.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [pageUrl, userDataDir, timeoutArg, serverLog] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg);

// The machine's network is closed: without the background-networking
// flags Chromium's own connections (updates, sync, field trials) are
// refused and slow its start.
const ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

// The preflights presenced answered, from its debug log (one
// "finished processing request" line per request, in the request's span):
// the test's premise is that the browser really made cross-origin calls.
function preflightsAnswered() {
    let n = 0;
    for (const line of readFileSync(serverLog, "utf8").split("\n")) {
        let entry;
        try {
            entry = JSON.parse(line);
        } catch {
            continue;
        }
        if (entry.fields?.message === "finished processing request" && entry.span?.method === "OPTIONS"
            && entry.fields?.status === 204) n++;
    }
    return n;
}

function summary(passed, failed) {
    console.log(`browser-test: ${passed} passed, ${failed} failed`);
}

// A fresh profile directory per run (in the script's temp directory).
let context;
try {
    context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: "/usr/bin/chromium",
        headless: true,
        args: ARGS,
        timeout: 30_000,
    });
} catch (e) {
    console.log(`browser-test: Chromium did not start: ${e.message}`);
    summary(0, 1);
    process.exit(1);
}
let code = 1;
try {
    const page = context.pages()[0] ?? (await context.newPage());
    // Everything the page logs, and what the browser refused (a CORS
    // refusal shows here as a console error naming the header).
    // The SDK's debug, info and warning lines are left out: they are many
    // and say nothing about this test (missing push rules, no TURN server).
    page.on("console", (m) => {
        // First lines only: the SDK logs the stack of each 404 it expects.
        if (m.type() === "log" || m.type() === "error") console.log(`page ${m.type()}: ${m.text().split("\n")[0]}`);
    });
    page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
    // ERR_ABORTED is the SDK cancelling its long poll when it stops.
    page.on("requestfailed", (r) => {
        const why = r.failure()?.errorText;
        if (why !== "net::ERR_ABORTED") console.log(`request failed: ${r.method()} ${r.url()}: ${why}`);
    });
    await page.goto(pageUrl, { timeout: 15_000 });
    let result;
    try {
        await page.waitForFunction(() => window.result?.done, null, { timeout: timeoutMs, polling: 200 });
        result = await page.evaluate(() => window.result);
    } catch (e) {
        const partial = await page.evaluate(() => window.result).catch(() => null);
        console.log(`browser-test: the page gave no verdict within ${timeoutMs} ms (${e.message.split("\n")[0]})`);
        result = { passed: partial?.passed ?? 0, failed: (partial?.failed ?? 0) + 1, lines: partial?.lines ?? [] };
    }
    if (result.failed === 0) {
        const n = preflightsAnswered();
        result.lines.push(`${n > 0 ? "ok  " : "FAIL"} presenced answered ${n} CORS preflights (OPTIONS, 204)`);
        n > 0 ? result.passed++ : result.failed++;
    }
    console.log("---");
    for (const line of result.lines) console.log(line);
    summary(result.passed, result.failed);
    code = result.failed === 0 && result.passed > 0 ? 0 : 1;
} finally {
    await context.close();
}
process.exit(code);
