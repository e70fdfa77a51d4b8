/** Bulk uploads and backpressure against a real Redis: one request, many documents, each once. */
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Api, documentId } from "../../src/pipeline/api.ts";
import { pipelineKeys } from "../../src/pipeline/keys.ts";
import type { Redis } from "../../src/pipeline/parts.ts";
import { startTestApi, type TestApi } from "../support/api.ts";

const keys = pipelineKeys("bulk-test:");
let started: TestApi | undefined;
let client: Redis;
let api: Api;

beforeAll(async () => {
  started = await startTestApi(keys, { maxBytes: 1024, maxBacklog: 5 }, (c) =>
    c.xGroupCreate(keys.stream("ocr"), "ocr", "0", { MKSTREAM: true }),
  );
  ({ client, api } = started);
});

afterAll(async () => {
  await started?.close();
});

async function postBatch(documents: unknown[]) {
  const response = await fetch(`${api.url}/documents/batch`, {
    method: "POST",
    body: JSON.stringify({ documents }),
    headers: { "content-type": "application/json" },
  });
  return {
    status: response.status,
    retryAfter: response.headers.get("retry-after"),
    data: (await response.json()) as { results?: Record<string, unknown>[]; error?: string },
  };
}

const doc = (n: number, key?: string) => ({
  name: `c${n}.pdf`,
  text: `Contract ${n}`,
  ...(key ? { idempotencyKey: key } : {}),
});

test("a batch queues each document once, keeps per-document idempotency, refuses bad ones alone, then 429 when behind", async () => {
  const first = await postBatch([doc(1, "k1"), doc(2, "k2"), { name: "x.pdf" }, doc(1, "k1")]);
  expect(first.status, JSON.stringify(first.data)).toBe(200);
  const [a, b, bad, again] = first.data.results ?? [];
  expect(a).toMatchObject({ status: 202 });
  expect(b).toMatchObject({ status: 202 });
  expect(bad).toMatchObject({ status: 422 });
  // The same key twice in one batch is one document.
  expect(again).toMatchObject({ status: 202, id: a?.id, duplicate: true });
  expect(await client.xLen(keys.stream("ocr"))).toBe(2);

  const retry = await postBatch([doc(1, "k1"), { ...doc(9), idempotencyKey: "k2" }, doc(3, "k3")]);
  const [same, conflict, third] = retry.data.results ?? [];
  expect(same).toMatchObject({ status: 202, id: a?.id, duplicate: true });
  expect(conflict).toMatchObject({ status: 409 });
  expect(third).toMatchObject({ status: 202 });
  expect(await client.xLen(keys.stream("ocr"))).toBe(3);

  // Three waiting, limit 5: three more pass; then the OCR backlog is over the limit.
  await postBatch([doc(4), doc(5), doc(6)]);
  await new Promise((resolve) => setTimeout(resolve, 150));
  const refused = await postBatch([doc(7, "k7")]);
  expect(refused.status).toBe(429);
  expect(refused.retryAfter).toBe("1");
  expect(refused.data.error).toMatch(/6 documents waiting at ocr \(limit 5\)/);
  expect(await client.exists(keys.doc(documentId("k7")))).toBe(0);
  expect(await client.xLen(keys.stream("ocr"))).toBe(6);
});
