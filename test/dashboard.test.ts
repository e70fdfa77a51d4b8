/**
 * The pipeline's live dashboard in a real browser: Debian's Chromium driven by playwright-core
 * (no browser download). One chaos run of a few hundred documents, as a user starts it
 * (`npm run pipeline -- --chaos --dashboard --json`): a tab opened as it starts, a poison
 * document with markup for a name uploaded from the page, a worker killed from the page, a
 * second tab opened late; at the end both tabs show the audit's numbers and the same state, and
 * nothing is left running. Skipped, saying why, where no Chromium can be found.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { get } from "node:http";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ROOT } from "../src/paths.ts";
import { signalGroup } from "../src/process-group.ts";
import { exitOf } from "./support/cli.ts";
import { listening } from "./support/listening.ts";
import { processesWithEnv } from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const CHROMIUM = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"]
  .filter((path): path is string => Boolean(path))
  .find((path) => existsSync(path));
const NO_CHROMIUM =
  "no Chromium found (CHROMIUM_PATH, /usr/bin/chromium): install Debian's with `apt-get install -y chromium` (.ci/run does)";
if (!CHROMIUM) console.warn(`test/dashboard.test.ts skipped: ${NO_CHROMIUM}`);

const EVIL = "<img src=x onerror=alert(1)>";
const DOCS = 300;

interface Run {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
  mark: string;
}

function startRun(args: string[]): Run {
  const mark = randomUUID();
  const child = spawn(process.execPath, ["--import", "tsx", "src/pipeline/cli.ts", ...args], {
    cwd: ROOT,
    detached: true,
    env: { ...process.env, PIPELINE_TEST_MARK: mark, FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const run: Run = { child, stdout: "", stderr: "", exited: exitOf(child), mark };
  child.stdout?.on("data", (chunk) => {
    run.stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    run.stderr += chunk;
  });
  return run;
}

/**
 * What a tab shows, as the test compares it: the totals and the tables. Read through locators:
 * the page's CSP forbids evaluating strings in it (which is part of what is tested).
 */
async function picture(page: Page) {
  const text = async (id: string) => (await page.locator(`#${id}`).textContent()) ?? "";
  return {
    documents: Number(await text("count-documents")),
    completed: Number(await text("count-completed")),
    dead: Number(await text("count-dead")),
    stages: await text("stages"),
    docs: await text("docs"),
    deadLetters: await text("dead-letters"),
    audit: await text("audit"),
  };
}

/** Waits until the number in element `id` passes `floor`. */
async function countAbove(page: Page, id: string, floor: number): Promise<void> {
  await expect
    .poll(async () => Number(await page.locator(`#${id}`).textContent()), { timeout: 60_000 })
    .toBeGreaterThan(floor);
}

describe.skipIf(!CHROMIUM)("the pipeline dashboard in Chromium", () => {
  let run: Run;
  let browser: Browser;
  let url = "";
  const dialogs: string[] = [];
  const pageErrors: string[] = [];
  let first: Page;
  let late: Page;

  async function open(): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    page.on("pageerror", (error) => pageErrors.push(error.message));
    // A blocked inline script or style would leave the page dead or bare: the CSP must fit it.
    page.on("console", (message) => {
      if (/Content Security Policy/i.test(message.text())) pageErrors.push(message.text());
    });
    await page.goto(url);
    return page;
  }

  beforeAll(async () => {
    // One document at a time per worker (--batch 1) with a slow service keeps the run going for
    // about twenty seconds, long after the page's kill and the late tab (the batched stages
    // finish 300 documents in about one), and every worker busy; a short claim threshold gets a
    // dead one's entries claimed within a second: there is something to recover, and it happens
    // while the tabs watch.
    run = startRun([
      ...["--docs", String(DOCS), "--workers", "2", "--batch", "1", "--latency", "150"],
      ...["--claim-idle", "500"],
      ...["--chaos", "--dashboard", "--json"],
    ]);
    const printed = await waitFor(() => /Dashboard http:\/\//.test(run.stderr), 90_000);
    expect(printed, run.stderr).toBe(true);
    url = /Dashboard (http:\/\/127\.0\.0\.1:\d+\/)/.exec(run.stderr)?.[1] ?? "";
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    if (run?.child.pid) signalGroup(run.child.pid, "SIGKILL");
  });

  test("a tab opened as the run starts shows documents moving through the stages", async () => {
    first = await open();
    await first.locator('body[data-snapshot="read"]').waitFor();
    await countAbove(first, "count-documents", 0);
    expect(await first.locator("#conn").textContent()).toBe("live");
  }, 90_000);

  let poisonId: string | null = null;
  test("a poison document named with markup is uploaded from the page", async () => {
    await first.fill("#poison-name", EVIL);
    await first.click("#poison");
    await first.locator("#action-result[data-doc]").waitFor();
    poisonId = await first.locator("#action-result").getAttribute("data-doc");
    expect(poisonId).toMatch(/^doc-/);
  }, 60_000);

  test("a worker killed from the page shows up as a recovery; a second tab joins meanwhile", async () => {
    await first.click("#kill");
    await first.locator("#action-result[data-pid]").waitFor({ timeout: 30_000 });
    const pid = await first.locator("#action-result").getAttribute("data-pid");
    const line = (kind: string) => first.locator(`#log li[data-kind="${kind}"][data-pid="${pid}"]`);
    // Mid-run, while the recovery goes on: the tab that joins late.
    late = await open();
    await late.locator('body[data-snapshot="read"]').waitFor();
    const shown = await picture(late);
    expect(shown.completed + shown.dead, "the second tab should open mid-run").toBeLessThan(DOCS);
    // Killed, its entries found, each claimed by a live worker, then every document finished.
    await expect.poll(() => line("kill").count(), { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    const killed = await line("kill").allTextContents();
    expect(killed.join("\n")).toMatch(/killed \(SIGKILL\)/);
    expect(killed.join("\n")).toMatch(/held [1-9]\d* entries/);
    await line("recovered").waitFor({ timeout: 60_000 });
    expect(await line("recovered").textContent()).toMatch(/all claimed, every document finished/);
    const claims = (await line("claim").allTextContents()).join("\n");
    expect(claims).toMatch(/: claimed/);
    expect(claims).toMatch(/ finished/);
  }, 120_000);

  test("both tabs end on the audit's numbers and the same state; markup shows as text", async () => {
    const code = await run.exited;
    const last = run.stdout.trim().split("\n").at(-1) ?? "";
    expect(code, `${run.stderr.slice(-3000)}\n${last}`).toBe(0);
    const audit = JSON.parse(last) as Record<string, number> & { ok: boolean };
    expect(audit.ok).toBe(true);
    // The run went through the chaos Redis restart, which the tabs' server rode out.
    expect(audit.redisRestarts).toBe(1);
    // The poison document from the page is one of the run's, counted by its audit.
    expect(audit.accepted).toBe(DOCS + 1);
    for (const tab of [first, late]) await tab.locator('body[data-run="finished"]').waitFor();
    const one = await picture(first);
    expect(one).toMatchObject({
      documents: audit.accepted,
      completed: audit.completed,
      dead: audit.deadLettered,
    });
    expect(one.audit).toContain(`Audit OK: ${audit.completed} completed`);
    expect(await picture(late)).toEqual(one);
    for (const tab of [first, late]) {
      // Dead-lettered at classify, listed under the name it was uploaded with, as text.
      const row = tab.locator(`#dead-letters tr[data-doc="${poisonId}"]`);
      expect(await row.locator("td.name").textContent()).toBe(EVIL);
      expect(await row.locator("td.reason").textContent()).toMatch(/gave up at classify/);
      expect(await tab.locator("img").count()).toBe(0);
    }
    expect(dialogs).toEqual([]);
    expect(pageErrors).toEqual([]);
  }, 240_000);

  test("nothing is left running: workers, Redis, the API and the dashboard", async () => {
    await run.exited;
    expect(await waitFor(() => processesWithEnv(run.mark).length === 0, 10_000)).toBe(true);
    const ports = [...run.stderr.matchAll(/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
    expect(ports.length).toBeGreaterThanOrEqual(3);
    for (const port of new Set(ports)) expect(await listening(port), `port ${port}`).toBe(false);
  });
});

test("Ctrl+C stops the dashboard with the run: its tabs are told, its port is freed", async () => {
  const run = startRun(["--docs", "5000", "--workers", "1", "--dashboard"]);
  try {
    expect(await waitFor(() => /Dashboard http/.test(run.stdout), 90_000), run.stderr).toBe(true);
    const url = /Dashboard (http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(run.stdout);
    let stream = "";
    const tab = get(`${url?.[1]}events`, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        stream += chunk;
      });
    });
    tab.on("error", () => {});
    expect(await waitFor(() => stream.includes("event: snapshot"), 30_000)).toBe(true);
    process.kill(run.child.pid ?? 0, "SIGINT");
    expect(await run.exited, run.stderr).toBe(130);
    expect(stream).toContain('event: end\ndata: {"stopped":true}');
    expect(await waitFor(() => processesWithEnv(run.mark).length === 0, 10_000)).toBe(true);
    expect(await listening(Number(url?.[2]))).toBe(false);
  } finally {
    if (run.child.pid) signalGroup(run.child.pid, "SIGKILL");
  }
}, 150_000);

if (!CHROMIUM) test.skip(`the pipeline dashboard in Chromium: ${NO_CHROMIUM}`, () => {});
