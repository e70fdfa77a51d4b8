/**
 * The intake API. POST /documents answers 202 with the document's id as soon as the upload is
 * safely on the OCR stream: the slow AI work happens later, in the stage workers.
 *
 *   POST /documents        {"name": "...", "text": "..."} -> 202 {"id", "status"}
 *                          optional header Idempotency-Key: a retry with the same key gets the
 *                          same id and is never queued twice; the same key with a different
 *                          document is 409
 *   GET  /documents/<id>   -> 200 {"id", "name", "status", "results", ...} or 404
 *   POST /documents/batch  many documents in one request (intake-batch.ts)
 *   GET  /health           -> 200 {"ok": true}
 *
 * With `maxBacklog`, uploads get 429 with Retry-After while a stage is that far behind.
 *
 * Bad input (not JSON, wrong fields, too large) gets a 4xx saying why, and is never queued.
 */
import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createClientPool, WatchError } from "redis";
import { type BatchItem, backlogGate, MAX_BATCH, queueMany } from "./intake-batch.ts";
import { type PipelineKeys, STAGES, type StatusEvent } from "./keys.ts";
import type { Parts, Redis } from "./parts.ts";

export interface ApiOptions {
  /**
   * Reads go through it. Each upload gets a connection of its own (WATCH is per connection)
   * from a pool opened with this client's options.
   */
  client: Redis;
  keys: PipelineKeys;
  broadcast: Parts["broadcast"];
  /** Largest accepted body, in bytes. */
  maxBytes: number;
  /** Refuse uploads (429) while a stage has more documents waiting than this; absent: never. */
  maxBacklog?: number;
  /** Runs on an upload's connection after it is queued, before the 202 (a cluster's WAIT). */
  afterQueued?: (client: Redis) => Promise<unknown>;
}

export interface Api {
  url: string;
  port: number;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

type Pool = ReturnType<typeof createClientPool<{}, {}, {}, 3, {}>>;
type Gate = () => Promise<{ stage: string; waiting: number } | undefined>;

/** Retry-After is whole seconds; the body says how long our own feeder waits. */
const RETRY_AFTER_MS = 200;

const KEY_PATTERN = /^[A-Za-z0-9_.:-]{1,128}$/;
const ID_PATTERN = /^doc-[0-9a-f-]{16,36}$/;

function send(res: ServerResponse, status: number, body: unknown, headers = {}): void {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(json),
    ...headers,
  });
  res.end(json);
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  const declared = Number(req.headers["content-length"] ?? Number.NaN);
  if (declared > maxBytes) {
    return Promise.reject(
      new HttpError(413, `The document is ${declared} bytes; the limit is ${maxBytes} bytes.`),
    );
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        reject(new HttpError(413, `The document is over the limit of ${maxBytes} bytes.`));
        req.removeAllListeners("data");
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** Checks an upload; returns the reason it is refused, or the upload itself. */
export function validateUpload(body: string): { name: string; text: string } {
  let data: unknown;
  try {
    data = JSON.parse(body);
  } catch (error) {
    throw new HttpError(400, `The body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new HttpError(422, 'The body must be a JSON object: {"name": "...", "text": "..."}.');
  }
  const { name, text } = data as Record<string, unknown>;
  if (typeof name !== "string" || name.trim().length === 0 || name.length > 200) {
    throw new HttpError(422, '"name" must be a non-empty string of at most 200 characters.');
  }
  if (typeof text !== "string" || text.trim().length === 0) {
    throw new HttpError(422, '"text" must be a non-empty string: the scanned document.');
  }
  return { name, text };
}

/** A retry with the same Idempotency-Key must land on the same document. */
export function documentId(idempotencyKey: string | undefined): string {
  if (idempotencyKey === undefined) return `doc-${randomUUID()}`;
  return `doc-${createHash("sha256").update(idempotencyKey).digest("hex").slice(0, 24)}`;
}

/** Only `application/json`, with or without parameters such as charset. */
function isJson(contentType: string): boolean {
  return contentType.split(";")[0]?.trim().toLowerCase() === "application/json";
}

type Queued = "queued" | "duplicate" | "conflict";

/**
 * Queues the upload under `id` unless a document already has that id: the check and the queueing
 * are one step, because WATCH voids the transaction when a concurrent request with the same
 * Idempotency-Key queued it first. Needs a connection of its own (WATCH is per connection).
 */
async function queueOnce(
  client: Redis,
  options: ApiOptions,
  id: string,
  upload: { name: string; text: string },
): Promise<Queued> {
  const { keys } = options;
  const docKey = keys.doc(id);
  for (;;) {
    await client.watch(docKey);
    const [submitted, name, text] = await client.hmGet(docKey, ["submitted", "name", "text"]);
    if (submitted != null) {
      await client.unwatch();
      return name === upload.name && text === upload.text ? "duplicate" : "conflict";
    }
    const tx = client
      .multi()
      .hSet(docKey, { name: upload.name, text: upload.text, submitted: String(Date.now()) })
      .xAdd(keys.stream("ocr"), "*", { doc: id });
    options.broadcast(tx, keys, { doc: id, stage: "intake", state: "queued", at: Date.now() });
    tx.hIncrBy(keys.stats, "intake:accepted", 1);
    try {
      await tx.exec();
      return "queued";
    } catch (error) {
      // Another request queued this id since our WATCH: look again, it is a duplicate now.
      if (!(error instanceof WatchError)) throw error;
    }
  }
}

/** 429 while the pipeline is too far behind; 503 when Redis cannot say. */
async function admit(options: ApiOptions, gate: Gate | undefined): Promise<void> {
  if (!gate) return;
  const behind = await gate().catch((error: Error) => {
    throw new HttpError(503, `The queue is unavailable (${error.message}). Retry later.`, {
      "retry-after": "1",
    });
  });
  if (behind) {
    throw new HttpError(
      429,
      `The pipeline is behind: ${behind.waiting} documents waiting at ${behind.stage} (limit ${options.maxBacklog}). Retry later with the same Idempotency-Key.`,
      { "retry-after": "1" },
    );
  }
}

function jsonOnly(req: IncomingMessage): void {
  if (!isJson(req.headers["content-type"] ?? "")) {
    throw new HttpError(415, "Send the document as JSON (Content-Type: application/json).");
  }
}

async function submit(
  options: ApiOptions,
  pool: Pool,
  gate: Gate | undefined,
  req: IncomingMessage,
  res: ServerResponse,
) {
  jsonOnly(req);
  const header = req.headers["idempotency-key"];
  const idempotencyKey = Array.isArray(header) ? header[0] : header;
  if (idempotencyKey !== undefined && !KEY_PATTERN.test(idempotencyKey)) {
    throw new HttpError(400, "Idempotency-Key must be 1 to 128 letters, digits or _.:-");
  }
  const upload = validateUpload(await readBody(req, options.maxBytes));
  await admit(options, gate);
  const id = documentId(idempotencyKey);
  const location = `/documents/${id}`;
  let outcome: Queued;
  try {
    outcome = await pool.execute(async (client) => {
      const queued = await queueOnce(client, options, id, upload);
      await options.afterQueued?.(client);
      return queued;
    });
  } catch (error) {
    const message = (error as Error).message;
    if (/TODO/.test(message)) throw error;
    throw new HttpError(
      503,
      `The queue is unavailable (${message}). Retry with the same Idempotency-Key.`,
    );
  }
  if (outcome === "conflict") {
    throw new HttpError(
      409,
      `The Idempotency-Key "${idempotencyKey}" was already used for a different document (${location}). Send a new document with a new key.`,
    );
  }
  const duplicate = outcome === "duplicate" ? { duplicate: true } : {};
  send(res, 202, { id, status: location, ...duplicate }, { location });
}

/** POST /documents/batch: every document checked alone; the valid ones queued in one go. */
async function submitBatch(
  options: ApiOptions,
  pool: Pool,
  gate: Gate | undefined,
  req: IncomingMessage,
  res: ServerResponse,
) {
  jsonOnly(req);
  const body = await readBody(req, options.maxBytes * MAX_BATCH);
  let documents: unknown;
  try {
    documents = (JSON.parse(body) as { documents?: unknown }).documents;
  } catch (error) {
    throw new HttpError(400, `The body is not valid JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(documents) || documents.length === 0 || documents.length > MAX_BATCH) {
    throw new HttpError(
      422,
      `The body must be {"documents": [...]} with 1 to ${MAX_BATCH} documents.`,
    );
  }
  const results: Record<string, unknown>[] = [];
  const items: BatchItem[] = [];
  documents.forEach((document: unknown, index) => {
    try {
      const key = (document as { idempotencyKey?: unknown } | null)?.idempotencyKey;
      if (key !== undefined && (typeof key !== "string" || !KEY_PATTERN.test(key))) {
        throw new HttpError(400, "idempotencyKey must be 1 to 128 letters, digits or _.:-");
      }
      const upload = validateUpload(JSON.stringify(document));
      items.push({ index, id: documentId(key as string | undefined), upload });
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      results[index] = { status: error.status, error: error.message };
    }
  });
  if (items.length > 0) {
    await admit(options, gate);
    let answers: Awaited<ReturnType<typeof queueMany>>;
    try {
      answers = await pool.execute(async (client) => {
        const queued = await queueMany(client, options.keys, items);
        await options.afterQueued?.(client);
        return queued;
      });
    } catch (error) {
      throw new HttpError(
        503,
        `The queue is unavailable (${(error as Error).message}). Retry with the same keys.`,
        { "retry-after": "1" },
      );
    }
    items.forEach((item, i) => {
      results[item.index] = answers[i] as Record<string, unknown>;
    });
  }
  send(res, 200, { results });
}

async function describe(options: ApiOptions, id: string, res: ServerResponse) {
  if (!ID_PATTERN.test(id)) throw new HttpError(404, `There is no document "${id}".`);
  const { client, keys } = options;
  const [doc, status] = await Promise.all([
    client.hGetAll(keys.doc(id)),
    client.hGet(keys.status, id),
  ]);
  if (!doc.submitted) throw new HttpError(404, `There is no document "${id}".`);
  const results: Record<string, unknown> = {};
  for (const stage of STAGES) {
    const value = doc[stage];
    if (value !== undefined) results[stage] = JSON.parse(value);
  }
  send(res, 200, {
    id,
    name: doc.name,
    submitted: Number(doc.submitted),
    status: status ? (JSON.parse(status) as StatusEvent) : null,
    results,
  });
}

/** A path segment as sent; a malformed %-escape is the client's mistake, not the server's. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, `The path segment "${segment}" has a malformed %-escape.`);
  }
}

async function route(
  options: ApiOptions,
  pool: Pool,
  gate: Gate | undefined,
  req: IncomingMessage,
  res: ServerResponse,
) {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  if (path === "/documents") {
    if (req.method !== "POST") throw new HttpError(405, "Use POST /documents to upload.");
    return submit(options, pool, gate, req, res);
  }
  if (path === "/documents/batch") {
    if (req.method !== "POST") throw new HttpError(405, "Use POST /documents/batch to upload.");
    return submitBatch(options, pool, gate, req, res);
  }
  const match = /^\/documents\/([^/]+)$/.exec(path);
  if (match) {
    if (req.method !== "GET") throw new HttpError(405, "Use GET /documents/<id>.");
    return describe(options, decodeSegment(match[1] ?? ""), res);
  }
  if (path === "/health") return send(res, 200, { ok: true });
  throw new HttpError(404, "Unknown path: try POST /documents or GET /documents/<id>.");
}

/** Listens on a free loopback port. */
export async function startApi(options: ApiOptions): Promise<Api> {
  // Without node-redis's 5-second timer per command: a bulk upload sends one HMGET per document,
  // and the timers cost more CPU than the commands. A command whose connection drops still fails.
  const { commandOptions, ...clientOptions } = options.client.options ?? {};
  const pool: Pool = createClientPool(
    { ...clientOptions, commandOptions: { ...commandOptions, timeout: 0 } },
    { minimum: 1, maximum: 16 },
  );
  pool.on("error", () => {});
  await pool.connect();
  const gate = options.maxBacklog
    ? backlogGate(options.client, options.keys, options.maxBacklog)
    : undefined;
  const server = createServer((req, res) => {
    route(options, pool, gate, req, res).catch((error: unknown) => {
      if (res.headersSent) return res.end();
      if (error instanceof HttpError) {
        const retry = error.headers["retry-after"];
        const body = retry ? { retryAfterMs: RETRY_AFTER_MS } : {};
        return send(res, error.status, { error: error.message, ...body }, error.headers);
      }
      send(res, 500, { error: (error as Error).message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }).finally(() => pool.destroy()),
  };
}
