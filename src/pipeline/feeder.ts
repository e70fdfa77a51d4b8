/**
 * The load generator: uploads documents through the intake API the way many users would, a few
 * at a time, retrying (with the same Idempotency-Key) when the API says the queue is down or
 * too far behind (503, 429). With `bulk`, each request carries that many documents.
 */
import type { Upload } from "./documents.ts";

export interface Submission {
  index: number;
  id: string;
  upload: Upload;
  /** How long the accepted attempt took, in milliseconds. */
  latencyMs: number;
}

export interface FeedResult {
  accepted: Submission[];
  /** Uploads the API never accepted, with its last answer. */
  failed: { index: number; reason: string }[];
  /** Answers to the deliberately bad requests: status and reason. */
  rejected: { status: number; reason: string }[];
  /** Every answered request's round trip, in milliseconds. */
  latencies: number[];
  retries: number;
}

export interface FeedOptions {
  apiUrl: string;
  uploads: Upload[];
  /** Idempotency keys are "<runId>-<index>". */
  runId: string;
  concurrency: number;
  /** Also send a few malformed requests, which must be refused. */
  badRequests: boolean;
  maxBytes: number;
  /** Documents per request to POST /documents/batch; 1 or absent: one POST /documents each. */
  bulk?: number;
  signal?: AbortSignal;
  onAccepted?: (submission: Submission) => void;
}

async function post(url: string, body: string, headers: Record<string, string>) {
  const started = performance.now();
  // A timeout of its own per request: fetch keeps a listener on a shared signal per request.
  const response = await fetch(url, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", ...headers },
    signal: AbortSignal.timeout(30_000),
  });
  const data = (await response.json().catch(() => ({}))) as Record<string, unknown>;
  return { status: response.status, data, ms: performance.now() - started };
}

/** The malformed uploads every run sends: each must get a 4xx and never be queued. */
export function badRequests(maxBytes: number): { what: string; body: string }[] {
  return [
    { what: "not JSON", body: "{ this is not json" },
    { what: "no text", body: JSON.stringify({ name: "empty.pdf" }) },
    {
      what: "too large",
      body: JSON.stringify({ name: "huge.pdf", text: "x".repeat(maxBytes + 1) }),
    },
  ];
}

/** How long to wait before trying again: the API's own advice on a 429/503, else a backoff. */
function backoff(attempt: number, data: Record<string, unknown>): number {
  const advised = Number(data.retryAfterMs);
  return Number.isFinite(advised) && advised > 0 ? advised : Math.min(100 * attempt, 1000);
}

/** Sends `indexes` in one request, again and again for those not accepted yet. */
async function feedBulk(options: FeedOptions, result: FeedResult, indexes: number[]) {
  const url = `${options.apiUrl}/documents/batch`;
  let left = indexes;
  let last = "";
  for (let attempt = 1; attempt <= 60 && left.length > 0 && !options.signal?.aborted; attempt++) {
    const documents = left.map((index) => ({
      ...(options.uploads[index] as Upload),
      idempotencyKey: `${options.runId}-${index}`,
    }));
    let data: Record<string, unknown> = {};
    try {
      const answer = await post(url, JSON.stringify({ documents }), {});
      data = answer.data;
      result.latencies.push(answer.ms);
      const answers = Array.isArray(data.results)
        ? (data.results as Record<string, unknown>[])
        : [];
      if (answer.status === 200 && answers.length === left.length) {
        left.forEach((index, i) => {
          const one = answers[i] ?? {};
          if (one.status === 202) {
            const upload = options.uploads[index] as Upload;
            const submission = { index, id: String(one.id), upload, latencyMs: answer.ms };
            result.accepted.push(submission);
            options.onAccepted?.(submission);
          } else {
            result.failed.push({ index, reason: `${one.status} ${String(one.error ?? "")}` });
          }
        });
        left = [];
        break;
      }
      last = `${answer.status} ${String(data.error ?? "")}`;
      if (answer.status !== 503 && answer.status !== 429) break;
      // Backpressure is the pipeline working as meant, not a failure: it does not use up tries.
      if (answer.status === 429) attempt--;
    } catch (error) {
      last = (error as Error).message;
    }
    result.retries++;
    await new Promise((resolve) => setTimeout(resolve, backoff(attempt, data)));
  }
  if (last && left.length > 0) {
    for (const index of left) result.failed.push({ index, reason: last });
  }
}

export async function feed(options: FeedOptions): Promise<FeedResult> {
  const url = `${options.apiUrl}/documents`;
  const result: FeedResult = { accepted: [], failed: [], rejected: [], latencies: [], retries: 0 };
  if (options.badRequests) {
    for (const bad of badRequests(options.maxBytes)) {
      const answer = await post(url, bad.body, {}).catch((error: Error) => ({
        status: 0,
        data: { error: error.message },
        ms: 0,
      }));
      result.rejected.push({ status: answer.status, reason: String(answer.data.error ?? "") });
    }
  }
  let next = 0;
  const bulk = options.bulk ?? 1;
  const lane = async () => {
    while (bulk > 1 && next < options.uploads.length && !options.signal?.aborted) {
      const start = next;
      next = Math.min(options.uploads.length, next + bulk);
      await feedBulk(
        options,
        result,
        Array.from({ length: next - start }, (_, i) => start + i),
      );
    }
    while (next < options.uploads.length && !options.signal?.aborted) {
      const index = next++;
      const upload = options.uploads[index] as Upload;
      const body = JSON.stringify(upload);
      let last = "";
      for (let attempt = 1; attempt <= 60 && !options.signal?.aborted; attempt++) {
        let data: Record<string, unknown> = {};
        try {
          const answer = await post(url, body, {
            "idempotency-key": `${options.runId}-${index}`,
          });
          result.latencies.push(answer.ms);
          if (answer.status === 202) {
            const submission = { index, id: String(answer.data.id), upload, latencyMs: answer.ms };
            result.accepted.push(submission);
            options.onAccepted?.(submission);
            last = "";
            break;
          }
          last = `${answer.status} ${String(answer.data.error ?? "")}`;
          if (answer.status !== 503 && answer.status !== 429) break;
          data = answer.data;
          if (answer.status === 429) attempt--;
        } catch (error) {
          last = (error as Error).message;
        }
        result.retries++;
        await new Promise((resolve) => setTimeout(resolve, backoff(attempt, data)));
      }
      if (last) result.failed.push({ index, reason: last });
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, lane));
  return result;
}
