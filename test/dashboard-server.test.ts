/**
 * The dashboard's server without a browser (cheap): who may drive it, what a tab joining late
 * is sent, and that it stops. On a private Redis, with a stand-in supervisor and upload.
 */
import { request } from "node:http";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Dashboard, startDashboard } from "../src/pipeline/dashboard/index.ts";
import { parseStatus, statusVersion } from "../src/pipeline/dashboard/status.ts";
import { pipelineKeys, STAGES, type StatusEvent } from "../src/pipeline/keys.ts";
import { connectClient, type Redis } from "../src/pipeline/parts.ts";
import type { Supervisor } from "../src/pipeline/supervisor.ts";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";
import { openEvents } from "./support/events-stream.ts";
import { listening } from "./support/listening.ts";

const keys = pipelineKeys("t:");
let server: PrivateServer;
let client: Redis;
let dashboard: Dashboard;
let port = 0;
const added: string[] = [];

beforeAll(async () => {
  server = await startPrivateServer();
  client = await connectClient(server.url, "test");
  for (const stage of STAGES)
    await client.xGroupCreate(keys.stream(stage), stage, "0", { MKSTREAM: true });
  const supervisor = {
    workers: new Map(),
    alive: () => [],
    kill: async () => {},
    addWorker: () => {
      added.push("9");
      return { slot: "9", pid: 999 };
    },
  } as unknown as Pick<Supervisor, "workers" | "alive" | "kill" | "addWorker">;
  dashboard = await startDashboard({
    redisUrl: server.url,
    keys,
    port: 0,
    clientName: "test:dashboard-",
    supervisor,
    upload: async () => "doc-0000000000000000",
  });
  port = Number(new URL(dashboard.url).port);
}, 60_000);

afterAll(async () => {
  await dashboard?.close();
  client?.destroy();
  await server?.stop();
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(method: string, path: string, headers: Record<string, string> = {}, body = "") {
  return new Promise<Answer>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, method, path, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

function publish(event: StatusEvent) {
  const json = JSON.stringify(event);
  return client.multi().hSet(keys.status, event.doc, json).publish(keys.channel, json).exec();
}

test("versions follow a document's life, and what is not a status is ignored", () => {
  const order: Pick<StatusEvent, "stage" | "state">[] = [
    { stage: "intake", state: "queued" },
    { stage: "ocr", state: "done" },
    { stage: "ner", state: "dead" },
    { stage: "classify", state: "done" },
    { stage: "embed", state: "done" },
  ];
  const versions = order.map(statusVersion);
  expect([...versions].sort((a, b) => a - b)).toEqual(versions);
  expect(new Set(versions).size).toBe(versions.length);
  expect(parseStatus("not json")).toBeUndefined();
  expect(parseStatus(JSON.stringify({ doc: "d", stage: "paint", state: "done", at: 1 }))).toBe(
    undefined,
  );
});

test("the page carries a strict CSP and its token; a foreign Host is refused", async () => {
  const page = await call("GET", "/");
  expect(page.status).toBe(200);
  const csp = String(page.headers["content-security-policy"]);
  expect(csp).toMatch(/script-src 'sha256-[^']+'(;|$)/);
  expect(csp).not.toMatch(/unsafe/);
  expect(csp).toContain("default-src 'none'");
  expect(page.body).toMatch(/<meta name="dashboard-token" content="[0-9a-f]{48}">/);
  expect((await call("GET", "/", { host: `evil.example:${port}` })).status).toBe(421);
});

test("actions need the page's token, its origin and JSON", async () => {
  const token = /content="([0-9a-f]{48})"/.exec((await call("GET", "/")).body)?.[1] ?? "";
  const json = { "content-type": "application/json" };
  const mine = { ...json, "x-dashboard-token": token };
  expect((await call("POST", "/actions/add", json, "{}")).status).toBe(403);
  const foreign = { ...mine, origin: "http://evil.example" };
  expect((await call("POST", "/actions/add", foreign, "{}")).status).toBe(403);
  const crossSite = { ...mine, "sec-fetch-site": "cross-site" };
  expect((await call("POST", "/actions/add", crossSite, "{}")).status).toBe(403);
  const form = { ...mine, "content-type": "text/plain" };
  expect((await call("POST", "/actions/add", form, "{}")).status).toBe(415);
  expect((await call("GET", "/actions/add", mine)).status).toBe(405);
  expect(added).toEqual([]);
  const ok = await call(
    "POST",
    "/actions/add",
    { ...mine, origin: `http://127.0.0.1:${port}` },
    "{}",
  );
  expect(ok.status, ok.body).toBe(200);
  expect(added).toEqual(["9"]);
  const poison = await call("POST", "/actions/poison", mine, JSON.stringify({ name: "" }));
  expect(poison.status).toBe(422);
});

test("a tab joining late gets the latest-status hash, then live statuses with their versions", async () => {
  await publish({ doc: "doc-a", stage: "intake", state: "queued", at: 1 });
  await publish({ doc: "doc-a", stage: "ocr", state: "done", at: 2 });
  const tab = openEvents(port);
  const snapshot = (await tab.next("snapshot")).data;
  expect(snapshot).toEqual([expect.objectContaining({ doc: "doc-a", stage: "ocr", v: 4 })]);
  // Sent after the snapshot: it reaches the tab live, with the version the tab compares.
  await publish({ doc: "doc-a", stage: "ner", state: "done", at: 3 });
  expect((await tab.next("status")).data).toMatchObject({ doc: "doc-a", stage: "ner", v: 7 });
  tab.close();
});

test("each dead letter's reason is read from the dead-letter stream once, for every tab", async () => {
  const tab = openEvents(port);
  await tab.next("snapshot");
  await client.xAdd(keys.dead, "*", { doc: "doc-b", stage: "ocr", reason: "unreadable scan" });
  expect((await tab.next("reasons")).data).toEqual({ "doc-b": "unreadable scan" });
  tab.close();
});

test("close() ends the streams and frees the port", async () => {
  const tab = openEvents(port);
  await tab.next("snapshot");
  await dashboard.close();
  expect((await tab.next("end")).data).toEqual({ stopped: true });
  expect(await listening(port)).toBe(false);
});
