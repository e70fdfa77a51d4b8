/**
 * The load generator: uploads documents through the intake API the way many users would, a few
 * at a time, retrying (with the same Idempotency-Key) when the API says the queue is down.
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
  const lane = async () => {
    while (next < options.uploads.length && !options.signal?.aborted) {
      const index = next++;
      const upload = options.uploads[index] as Upload;
      const body = JSON.stringify(upload);
      let last = "";
      for (let attempt = 1; attempt <= 60 && !options.signal?.aborted; attempt++) {
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
          if (answer.status !== 503) break;
        } catch (error) {
          last = (error as Error).message;
        }
        result.retries++;
        await new Promise((resolve) => setTimeout(resolve, Math.min(100 * attempt, 1000)));
      }
      if (last) result.failed.push({ index, reason: last });
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, lane));
  return result;
}
