/**
 * `npm run doctor`: is this machine ready for the workbook? Node, dependencies, redis-server,
 * REDIS_URL (reachable, TLS, auth, allowed to write its keys) and the workspace, each with the
 * exact fix when it is not.
 */
import { randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import kleur from "kleur";
import { createClient } from "redis";
import type { Lesson } from "./catalog.ts";
import { ROOT, workspaceDir } from "./paths.ts";
import { redact } from "./redis/redact.ts";
import { installAdvice, redisServerVersion, startPrivateServer } from "./redis/server.ts";
import { RedisUrlError, redisUrlFrom, versionAtLeast } from "./redis/target.ts";
import { tlsSocketOptions } from "./redis/tls.ts";
import { wrapLine } from "./ui/term.ts";

export type Status = "ok" | "warn" | "fail" | "info";

export interface Finding {
  name: string;
  status: Status;
  detail: string;
  /** What to do about it, for warn and fail. */
  fix?: string;
}

/** "^20.17" is ">=20.17 <21": the same major version, at least this minor. */
function expandCaret(comparator: string): string[] {
  const caret = /^\^v?(\d+)([\d.]*)$/.exec(comparator);
  if (!caret) return [comparator];
  const [, major = "0", rest = ""] = caret;
  return [`>=${major}${rest}`, `<${Number(major) + 1}`];
}

/** Whether `version` satisfies a range like "^20.17 || ^22.13 || >=23.5". */
export function satisfies(version: string, range: string): boolean {
  const v = version.replace(/^v/, "");
  return range.split("||").some((alternative) =>
    alternative
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .flatMap(expandCaret)
      .every((comparator) => {
        const match = /^(>=|<=|>|<|=)?\s*v?([\d.]+)$/.exec(comparator);
        if (!match) return false;
        const [, op = "=", target = ""] = match;
        const atLeast = versionAtLeast(v, target);
        const same = atLeast && versionAtLeast(target, v);
        switch (op) {
          case ">=":
            return atLeast;
          case ">":
            return atLeast && !same;
          case "<":
            return !atLeast;
          case "<=":
            return !atLeast || same;
          default:
            return same;
        }
      }),
  );
}

export function checkNode(version = process.version): Finding {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
    engines?: { node?: string };
  };
  const range = pkg.engines?.node ?? ">=20.17";
  const ok = satisfies(version, range);
  return {
    name: "Node.js",
    status: ok ? "ok" : "fail",
    detail: `Node.js ${version.replace(/^v/, "")} (the workbook needs ${range})`,
    fix: ok
      ? undefined
      : "Install Node.js 22 LTS (https://nodejs.org, or `nvm install 22`), then `npm install`.",
  };
}

export function checkDependencies(): Finding {
  const versionOf = (name: string) => {
    const file = join(ROOT, "node_modules", name, "package.json");
    return existsSync(file)
      ? (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version
      : undefined;
  };
  const wanted = ["redis", "vitest", "tsx", "typescript"];
  const missing = wanted.filter((name) => !versionOf(name));
  return missing.length === 0
    ? {
        name: "dependencies",
        status: "ok",
        detail: `Dependencies installed (redis ${versionOf("redis")}, vitest ${versionOf("vitest")})`,
      }
    : {
        name: "dependencies",
        status: "fail",
        detail: `Missing packages: ${missing.join(", ")}`,
        fix: "Run `npm install` in the workbook folder.",
      };
}

function neededRedis(lessons: Lesson[]): { version: string; lessons: Lesson[] } {
  let version = "6.2";
  for (const lesson of lessons) {
    if (lesson.minRedis && !versionAtLeast(version, lesson.minRedis)) version = lesson.minRedis;
  }
  return { version, lessons: lessons.filter((l) => l.minRedis === version) };
}

export async function checkRedisServer(lessons: Lesson[], externalOk: boolean): Promise<Finding[]> {
  const version = redisServerVersion();
  if (!version) {
    return [
      {
        name: "redis-server",
        status: externalOk ? "warn" : "fail",
        detail: externalOk
          ? "redis-server is not installed: checks use REDIS_URL, and lessons that need the private server are skipped."
          : "redis-server is not installed, and no REDIS_URL is set.",
        fix: installAdvice().split("\n").slice(2).join("\n").trim(),
      },
    ];
  }
  const needed = neededRedis(lessons);
  const findings: Finding[] = [
    versionAtLeast(version, needed.version)
      ? {
          name: "redis-server",
          status: "ok",
          detail: `redis-server ${version} (the lessons need ${needed.version} or newer)`,
        }
      : {
          name: "redis-server",
          status: versionAtLeast(version, "6.2") ? "warn" : "fail",
          detail: `redis-server ${version} is older than ${needed.version}, which lesson ${needed.lessons.map((l) => l.number).join(", ")} needs.`,
          fix: "Install a newer Redis (https://redis.io/docs/latest/operate/oss_and_stack/install/), or point REDIS_URL at one.",
        },
  ];
  try {
    const server = await startPrivateServer();
    await server.stop();
    findings.push({
      name: "private server",
      status: "ok",
      detail: "The workbook's private redis-server starts and answers PING",
    });
  } catch (error) {
    findings.push({
      name: "private server",
      status: externalOk ? "warn" : "fail",
      detail: `redis-server is installed but did not start: ${(error as Error).message}`,
      fix: "Run `redis-server --port 0 --save ''` by hand to see its error (a broken install, or no permission to bind 127.0.0.1).",
    });
  }
  return findings;
}

/** Why a connection to REDIS_URL failed, and what exactly to change. */
export function explainRedisError(
  error: { message: string; code?: string; name?: string },
  url: URL,
): { problem: string; fix: string } {
  const where = `${url.hostname}:${url.port || "6379"}`;
  const text = `${error.code ?? ""} ${error.name ?? ""} ${error.message}`;
  if (/ENOTFOUND|EAI_AGAIN/.test(text)) {
    return {
      problem: `the host name ${url.hostname} does not resolve`,
      fix: "Check the spelling of the host in REDIS_URL (Azure: <name>.redis.cache.windows.net or <name>.<region>.redis.azure.net).",
    };
  }
  if (/ECONNREFUSED/.test(text)) {
    return {
      problem: `nothing accepts connections at ${where}`,
      fix: "Check that the server runs and the port is right: local 6379, Azure Cache for Redis 6380 (TLS), Azure Managed Redis 10000 (TLS).",
    };
  }
  if (/WRONGPASS|NOAUTH|invalid (?:username|password)|AUTH failed/i.test(text)) {
    return {
      problem: "the server refused the user name or password",
      fix: "Put the right credentials in REDIS_URL: rediss://:<access key>@host:6380 (Azure Cache for Redis), rediss://<object id>:<token>@host:10000 (Entra ID: tokens expire, get a fresh one).",
    };
  }
  if (/NOPERM/.test(text)) {
    return {
      problem: "the user may not run the commands the workbook needs",
      fix: "Give the ACL user the commands and keys: ACL SETUSER <user> on +@all ~wb:* &wb:* (or use the default user).",
    };
  }
  if (/SSL|TLS|certificate|CERT_|self.signed|wrong version number|packet length/i.test(text)) {
    return /wrong version number|packet length/i.test(text)
      ? {
          problem: `the server at ${where} does not speak TLS`,
          fix: "Use redis:// for a server without TLS, or the TLS port (Azure Cache for Redis 6380, Azure Managed Redis 10000).",
        }
      : {
          problem: `the TLS handshake failed: ${redact(error.message)}`,
          fix: /altnames/i.test(text)
            ? "The certificate names another host: connect by that name, or export REDIS_TLS_SERVERNAME=<the name on the certificate>."
            : "If the server uses your own certificate authority, point the workbook at it: export REDIS_CA=/path/to/ca.pem.",
        };
  }
  if (/closed unexpectedly|ECONNRESET|socket hang up/i.test(text)) {
    return {
      problem: `the server at ${where} closed the connection`,
      fix:
        url.protocol === "redis:"
          ? "It probably expects TLS: use rediss:// (Azure Cache for Redis on 6380, Azure Managed Redis on 10000)."
          : "Check the port and that your IP may connect (Azure: the cache's firewall or private endpoint settings).",
    };
  }
  if (/timeout|ETIMEDOUT/i.test(text)) {
    return {
      problem: `no answer from ${where} within 5 s`,
      fix:
        url.protocol === "rediss:"
          ? "If that server has no TLS, use redis:// instead of rediss://. Otherwise a firewall is in the way: on Azure, allow your IP in the cache's networking settings, or connect from inside its virtual network."
          : "A firewall is likely in the way: on Azure, allow your IP in the cache's networking settings, or connect from inside its virtual network.",
    };
  }
  return {
    problem: redact(error.message),
    fix: 'Run `redis-cli -u "$REDIS_URL" PING` to compare.',
  };
}

/** Connects to REDIS_URL and tries what the checks will do: INFO, and writing a wb: key. */
export async function checkRedisUrl(raw: string | undefined): Promise<Finding | undefined> {
  if (!raw?.trim()) return undefined;
  let value: string;
  let url: URL;
  try {
    value = redisUrlFrom(raw);
    url = new URL(value);
  } catch (error) {
    return {
      name: "REDIS_URL",
      status: "fail",
      detail:
        error instanceof RedisUrlError
          ? error.message
          : "REDIS_URL is not a valid redis:// or rediss:// URL (a password with / # ? or @ must be URL-encoded).",
      fix: "Set it like rediss://:<password>@<host>:6380, or unset it to use the private redis-server.",
    };
  }
  const converted = /^rediss?:\/\//i.test(raw.trim()) ? "" : " (from the Azure connection string)";
  const shown = `${redact(value)}${converted}`;
  const tls = url.protocol === "rediss:";
  const auth = url.password ? `user ${url.username || "default"} with a password` : "no password";
  let tlsOptions: ReturnType<typeof tlsSocketOptions>;
  try {
    tlsOptions = tlsSocketOptions(value);
  } catch (error) {
    return {
      name: "REDIS_URL",
      status: "fail",
      detail: (error as Error).message,
      fix: "Point REDIS_CA at the CA's PEM file, or unset it to trust the system's CAs only.",
    };
  }
  const withCa = "ca" in tlsOptions && tlsOptions.ca !== undefined;
  const tlsNote = tls ? `on${withCa ? " (with the CA in REDIS_CA)" : ""}` : "off";
  const client = createClient({
    url: value,
    name: "wb:check:doctor",
    socket: { connectTimeout: 5000, reconnectStrategy: false, ...tlsOptions },
  });
  let firstError: (Error & { code?: string }) | undefined;
  client.on("error", (error: Error) => {
    firstError ??= error;
  });
  try {
    await client.connect();
    const info = await client.info("server");
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
    const key = `wb:doctor:${randomBytes(4).toString("hex")}`;
    await client.set(key, "1", { expiration: { type: "PX", value: 10_000 } });
    await client.del(key);
    const azureHints: string[] = [];
    if (/\.redis\.cache\.windows\.net$/i.test(url.hostname) && url.port !== "6380") {
      azureHints.push("Azure Cache for Redis serves TLS on port 6380.");
    }
    return {
      name: "REDIS_URL",
      status: azureHints.length > 0 ? "warn" : "ok",
      detail: `REDIS_URL ${shown} answers: Redis ${version}, TLS ${tlsNote}, ${auth}; the workbook may write its wb: keys`,
      fix: azureHints.length > 0 ? azureHints.join(" ") : undefined,
    };
  } catch (error) {
    const cause = firstError ?? (error as Error & { code?: string });
    const { problem, fix } = explainRedisError(cause, url);
    return {
      name: "REDIS_URL",
      status: "fail",
      detail: `REDIS_URL ${shown} (TLS ${tlsNote}, ${auth}): ${problem}`,
      fix: `${fix} Or unset REDIS_URL to use the private redis-server.`,
    };
  } finally {
    client.destroy();
  }
}

export function checkWorkspace(env: NodeJS.ProcessEnv = process.env): Finding {
  const dir = workspaceDir(env);
  const shown = relative(ROOT, dir) || dir;
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return { name: "workspace", status: "ok", detail: `Your workspace is writable: ${shown}/` };
  } catch (error) {
    return {
      name: "workspace",
      status: "fail",
      detail: `Cannot write to ${shown}/: ${(error as Error).message}`,
      fix: `Make it yours: sudo chown -R "$USER" ${shown}`,
    };
  }
}

export function checkTerminal(stream = process.stdout): Finding | undefined {
  if (!stream.isTTY) return undefined;
  const columns = stream.columns ?? 80;
  return columns >= 80
    ? { name: "terminal", status: "ok", detail: `Terminal: ${columns} columns` }
    : {
        name: "terminal",
        status: "warn",
        detail: `Terminal: ${columns} columns; the workbook is laid out for 80`,
        fix: "Make the window wider, or the font smaller.",
      };
}

export async function diagnose(lessons: Lesson[]): Promise<Finding[]> {
  const findings: Finding[] = [checkNode(), checkDependencies()];
  const redisUrl = await checkRedisUrl(process.env.REDIS_URL);
  findings.push(...(await checkRedisServer(lessons, redisUrl?.status === "ok")));
  findings.push(
    redisUrl ?? {
      name: "REDIS_URL",
      status: "info",
      detail: "REDIS_URL is not set: checks use the workbook's private redis-server.",
    },
  );
  findings.push(checkWorkspace());
  const terminal = checkTerminal();
  if (terminal) findings.push(terminal);
  return findings;
}

const MARKS: Record<Status, string> = {
  ok: kleur.green("✓"),
  warn: kleur.yellow("!"),
  fail: kleur.red("✗"),
  info: kleur.dim("·"),
};

export function renderFindings(findings: Finding[], width = 80): string {
  const lines = [kleur.bold("Workbook doctor"), ""];
  for (const finding of findings) {
    lines.push(...wrapLine(`${MARKS[finding.status]} ${finding.detail}`, width, "  "));
    const [first, ...more] = finding.fix?.split("\n") ?? [];
    if (first !== undefined) lines.push(...wrapLine(`  Fix: ${first}`, width, "       "));
    for (const line of more) lines.push(...wrapLine(`  ${line}`, width));
  }
  const failed = findings.filter((f) => f.status === "fail").length;
  lines.push(
    "",
    failed === 0
      ? "Ready. Next: `npm start`."
      : `${failed} problem${failed > 1 ? "s" : ""} to fix (see Fix: above), then run \`npm run doctor\` again.`,
  );
  return lines.join("\n");
}
