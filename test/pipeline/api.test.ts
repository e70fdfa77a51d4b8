/** The intake API against a real Redis: quick 202s, clear 4xx, nothing bad ever queued. */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { Api } from "../../src/pipeline/api.ts";
import { pipelineKeys } from "../../src/pipeline/keys.ts";
import type { Redis } from "../../src/pipeline/parts.ts";
import { startTestApi, type TestApi } from "../support/api.ts";

const keys = pipelineKeys("api-test:");
let started: TestApi | undefined;
let client: Redis;
let api: Api;

beforeAll(async () => {
  started = await startTestApi(keys, { maxBytes: 1024 });
  ({ client, api } = started);
});

afterAll(async () => {
  await started?.close();
});

/** Everything Redis holds for one document id: its hash, its OCR entries, its "queued" events. */
async function stateOf(id: string) {
  const entries = (await client.xRange(keys.stream("ocr"), "-", "+")) ?? [];
  return {
    hash: await client.hGetAll(keys.doc(id)),
    queued: entries.filter((e) => e.message.doc === id).length,
  };
}

async function post(body: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${api.url}/documents`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", ...headers },
  });
  return { status: response.status, data: (await response.json()) as Record<string, unknown> };
}

describe("the intake API", () => {
  test("accepts a document with 202 and its id, queues it, and reports its status", async () => {
    const { status, data } = await post(JSON.stringify({ name: "nda.pdf", text: "NDA text" }));
    expect(status).toBe(202);
    const id = String(data.id);
    expect(data.status).toBe(`/documents/${id}`);
    const entries = (await client.xRange(keys.stream("ocr"), "-", "+")) ?? [];
    expect(entries.map((e) => e.message.doc)).toContain(id);
    const described = await fetch(`${api.url}/documents/${id}`);
    expect(described.status).toBe(200);
    expect(await described.json()).toMatchObject({
      id,
      name: "nda.pdf",
      status: { doc: id, stage: "intake", state: "queued" },
      results: {},
    });
  });

  test("a retry with the same Idempotency-Key gets the same id and is not queued again", async () => {
    const body = JSON.stringify({ name: "lease.pdf", text: "Lease text" });
    const before = await client.xLen(keys.stream("ocr"));
    const first = await post(body, { "idempotency-key": "upload-42" });
    const second = await post(body, { "idempotency-key": "upload-42" });
    expect([first.status, second.status]).toEqual([202, 202]);
    expect(second.data.id).toBe(first.data.id);
    expect(second.data.duplicate).toBe(true);
    expect(await client.xLen(keys.stream("ocr"))).toBe(before + 1);
  });

  test("hundreds of concurrent requests with one Idempotency-Key queue the document once", async () => {
    const body = JSON.stringify({ name: "merger.pdf", text: "Merger agreement" });
    const answers = await Promise.all(
      Array.from({ length: 300 }, () => post(body, { "idempotency-key": "burst-1" })),
    );
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([202]));
    const ids = new Set(answers.map((a) => a.data.id));
    expect(ids.size).toBe(1);
    expect(answers.filter((a) => a.data.duplicate !== true)).toHaveLength(1);
    const state = await stateOf(String([...ids][0]));
    expect(state.queued).toBe(1);
    expect(state.hash).toMatchObject({ name: "merger.pdf", text: "Merger agreement" });
  });

  test("the same Idempotency-Key with a different document is 409, and the first one stays", async () => {
    // Two bodies race for one key: whichever queues first wins, every other body is refused.
    const bodies = ["first", "second"].map((text) => JSON.stringify({ name: "a.pdf", text }));
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        post(bodies[i % 2] ?? "", { "idempotency-key": "burst-2" }),
      ),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status === 409);
    expect(accepted.length + refused.length).toBe(200);
    const id = String(accepted[0]?.data.id);
    const state = await stateOf(id);
    expect(state.queued).toBe(1);
    // Exactly the requests that carried the stored body were accepted.
    const stored = JSON.stringify({ name: state.hash.name, text: state.hash.text });
    expect(accepted).toHaveLength(answers.filter((_, i) => bodies[i % 2] === stored).length);
    expect(String(refused[0]?.data.error)).toMatch(/already used for a different document/);
  });

  test("malformed, incomplete or oversized uploads get a 4xx with the reason and are never queued", async () => {
    const before = await client.xLen(keys.stream("ocr"));
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ["{ nope", {}, 400, /not valid JSON/],
      [JSON.stringify({ name: "x.pdf" }), {}, 422, /"text"/],
      [JSON.stringify({ name: "x.pdf", text: "y".repeat(2000) }), {}, 413, /limit is 1024 bytes/],
      [JSON.stringify({ name: "x.pdf", text: "y" }), { "content-type": "text/plain" }, 415, /JSON/],
      [
        JSON.stringify({ name: "x.pdf", text: "y" }),
        { "content-type": "application/json-patch+json" },
        415,
        /JSON/,
      ],
      [
        JSON.stringify({ name: "x.pdf", text: "y" }),
        { "idempotency-key": "no spaces" },
        400,
        /Idempotency-Key/,
      ],
    ];
    for (const [body, headers, status, reason] of cases) {
      const answer = await post(body, headers);
      expect(answer.status, body.slice(0, 40)).toBe(status);
      expect(String(answer.data.error)).toMatch(reason);
    }
    expect(await client.xLen(keys.stream("ocr"))).toBe(before);
  });

  test("unknown documents and paths are 404, wrong methods 405", async () => {
    expect((await fetch(`${api.url}/documents/doc-0000000000000000`)).status).toBe(404);
    expect((await fetch(`${api.url}/nope`)).status).toBe(404);
    expect((await fetch(`${api.url}/documents`)).status).toBe(405);
  });

  test("a malformed %-escape in the path is 400, not a server error", async () => {
    for (const path of ["/documents/%E0%A4%A", "/documents/%"]) {
      const answer = await fetch(`${api.url}${path}`);
      expect(answer.status, path).toBe(400);
      expect(String(((await answer.json()) as { error: string }).error)).toMatch(/%-escape/);
    }
  });

  test("JSON with a charset parameter is accepted", async () => {
    const body = JSON.stringify({ name: "c.pdf", text: "Charset" });
    const answer = await post(body, { "content-type": "Application/JSON; charset=utf-8" });
    expect(answer.status).toBe(202);
  });
});
