/**
 * The dashboard's HTTP side, kept strict because it drives a running system from a browser:
 * loopback only; a Host check (a DNS-rebinding page cannot reach it under another name); a
 * Content-Security-Policy that allows only the page's own inline script and style, by hash, so
 * an uploaded document name can never run as code even if it reached the page as markup; and
 * actions that need the random token the page carries, sent in a header, which another site's
 * page can neither read nor send without a CORS preflight this server never answers.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { ROOT } from "../../paths.ts";

const PAGE = join(ROOT, "src", "pipeline", "dashboard", "page.html");
const TOKEN_HEADER = "x-dashboard-token";
const MAX_BODY = 4096;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function hashOf(page: string, tag: "script" | "style"): string {
  const match = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(page);
  if (!match) throw new Error(`page.html has no inline <${tag}>`);
  return `'sha256-${createHash("sha256")
    .update(match[1] ?? "")
    .digest("base64")}'`;
}

/** The page, its token, and the headers every answer carries. */
export function loadPage() {
  const token = randomBytes(24).toString("hex");
  const template = readFileSync(PAGE, "utf8");
  const csp = [
    "default-src 'none'",
    `script-src ${hashOf(template, "script")}`,
    `style-src ${hashOf(template, "style")}`,
    "connect-src 'self'",
    "img-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  const headers = {
    "content-security-policy": csp,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
  };
  // The token is hex: nothing to escape in the attribute it goes into.
  return { token, html: template.replace("{{TOKEN}}", token), headers };
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers = {}) {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(json),
  });
  res.end(json);
}

/** Only this server's own names: 127.0.0.1 or localhost on its port. */
export function checkHost(req: IncomingMessage, port: number): void {
  const host = req.headers.host ?? "";
  if (host !== `127.0.0.1:${port}` && host !== `localhost:${port}`) {
    throw new HttpError(421, `This dashboard answers only as 127.0.0.1:${port}.`);
  }
}

/** An action from the page itself: its token, its origin (when the browser says), JSON. */
export function checkAction(req: IncomingMessage, port: number, token: string): void {
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== `http://${req.headers.host}`) {
    throw new HttpError(403, "Actions are taken only from the dashboard's own page.");
  }
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin") {
    throw new HttpError(403, "Actions are taken only from the dashboard's own page.");
  }
  const given = Buffer.from(String(req.headers[TOKEN_HEADER] ?? ""));
  const expected = Buffer.from(token);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new HttpError(403, "Missing or wrong dashboard token: reload the page.");
  }
  if ((req.headers["content-type"] ?? "").split(";")[0]?.trim() !== "application/json") {
    throw new HttpError(415, "Send actions as JSON.");
  }
  checkHost(req, port);
}

export function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
      if (body.length > MAX_BODY) {
        req.removeAllListeners("data");
        req.resume();
        reject(new HttpError(413, "That request is too large."));
      }
    });
    req.on("end", () => {
      try {
        const data = body ? (JSON.parse(body) as unknown) : {};
        if (typeof data !== "object" || data === null || Array.isArray(data)) throw new Error();
        resolve(data as Record<string, unknown>);
      } catch {
        reject(new HttpError(400, "The body must be a JSON object."));
      }
    });
    req.on("error", reject);
  });
}

/** Listens on 127.0.0.1 only; `port` 0 takes a free one. */
export async function listen(
  port: number,
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  headers: Record<string, string>,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) return res.end();
      const status = error instanceof HttpError ? error.status : 500;
      sendJson(res, status, { error: (error as Error).message }, headers);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port };
}
