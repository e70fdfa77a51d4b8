import { randomBytes, randomInt } from "node:crypto";
import net from "node:net";
import { format } from "node:util";
import { createClient, type RedisClientOptions } from "redis";
import { describe, test, vi } from "vitest";
import { freePort, startPrivateServer } from "../../src/redis/server.ts";
import {
  aclAccount,
  CheckFailure,
  type ConnectionInfo,
  call,
  check,
  checkClient,
  ctx,
  fail,
  failIfNotWritten,
  freshKey,
  learnerConnections,
  loadExercise,
  type Redis,
  sameValue,
  settled,
  sleep,
  until,
  within,
} from "../kit.ts";
import { expectRefusedLoginFails, loginRefusalLogged } from "../refused-login.ts";
import {
  allLearnerAddrs,
  checkOwnsSocket,
  dropConnection,
  failedConnects,
  learnerAddrs,
  openedSince,
  scope,
  scopeTimers,
} from "../wire.ts";

type Profile =
  | { kind: "local"; host?: string; port?: number }
  | { kind: "azure-cache"; host: string; accessKey: string }
  | { kind: "azure-managed"; host: string; objectId: string; token: string };

interface Exercise {
  reconnectDelay(retries: number): number;
  buildOptions(profile: Profile, name: string): RedisClientOptions;
  connect(url: string, name: string): Promise<Redis>;
  withRedis<T>(url: string, name: string, work: (client: Redis) => Promise<T>): Promise<T>;
}

const exercise = await loadExercise<Exercise>(
  "reconnectDelay",
  "buildOptions",
  "connect",
  "withRedis",
);

interface Socket {
  host?: string;
  port?: number;
  tls?: boolean;
  servername?: string;
  rejectUnauthorized?: boolean;
  checkServerIdentity?: unknown;
  reconnectStrategy?: unknown;
}

/**
 * A wrong password no message or log line holds by chance: an upper-case letter and a digit by
 * turns, so each piece of three has both (node-redis's messages, addresses and the check's
 * lower-case hex names have no such piece).
 */
function unmistakablePassword(): string {
  const letters = "ABCDEFGHJKLMNPQRSTUVWXYZ";
  return Array.from({ length: 16 }, (_, i) =>
    i % 2 === 0 ? letters[randomInt(letters.length)] : String(randomInt(10)),
  ).join("");
}

/** The first piece of `secret` (three characters or more) that `text` holds. */
function pieceOf(secret: string, text: string): string | undefined {
  if (text.includes(secret)) return secret;
  for (let at = 0; at + 3 <= secret.length; at++) {
    const piece = secret.slice(at, at + 3);
    if (text.includes(piece)) return piece;
  }
  return undefined;
}

/** An error's message and its causes' messages. */
function messagesOf(error: unknown): string[] {
  const messages: string[] = [];
  for (let e = error; e !== undefined && messages.length < 5; ) {
    messages.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return messages;
}

/** What the code logs with console from now until stop() (still written out as well). */
function captureConsole() {
  const lines: string[] = [];
  const methods = ["log", "info", "warn", "error", "debug"] as const;
  const originals = methods.map((method) => console[method]);
  for (const [i, method] of methods.entries()) {
    console[method] = (...args: unknown[]) => {
      lines.push(format(...args));
      originals[i]?.apply(console, args);
    };
  }
  return {
    text: () => lines.join("\n"),
    lineWith: (piece: string) => lines.find((line) => line.includes(piece)) ?? "",
    stop: () => {
      for (const [i, method] of methods.entries()) console[method] = originals[i] as never;
    },
  };
}

/** A server that forwards to the private Redis once it listens: a Redis that starts late. */
function lateRedis(): net.Server {
  const target = new URL(ctx.redisUrl);
  return net.createServer((incoming) => {
    const outgoing = net.connect(Number(target.port), target.hostname);
    checkOwnsSocket(outgoing);
    incoming.pipe(outgoing).pipe(incoming);
    incoming.on("error", () => outgoing.destroy());
    outgoing.on("error", () => incoming.destroy());
  });
}

/** A certificate issued to another host: what a man in the middle presents. */
const FOREIGN_CERT = {
  subject: { CN: "attacker.example" },
  subjectaltname: "DNS:attacker.example",
};

/**
 * TLS that accepts any certificate: a learner who met a certificate error on the way (a wrong
 * servername, a local proxy) and turned verification off "to make it work" encrypts the traffic
 * to whoever answers, a man in the middle included.
 */
function checkVerifiesCertificate(socket: Socket, service: string) {
  check(
    socket.rejectUnauthorized !== false,
    `Your ${service} options set socket.rejectUnauthorized to false, which accepts any certificate: the access key and every document would go to whoever answers on that address. Leave rejectUnauthorized out (Node verifies by default); a certificate error means a wrong host or servername, not a check to turn off.`,
    2,
  );
  // Verification has two halves, the chain and the host name: a checkServerIdentity that
  // accepts everything keeps the first and throws the second away, just as fatally.
  const verdict = (() => {
    if (typeof socket.checkServerIdentity !== "function") return "default";
    try {
      return socket.checkServerIdentity(socket.servername ?? socket.host, FOREIGN_CERT);
    } catch (error) {
      return error;
    }
  })();
  check(
    verdict === "default" || verdict instanceof Error,
    `Your ${service} options set socket.checkServerIdentity to a function that accepted a certificate issued to attacker.example for ${socket.servername ?? socket.host}: the chain is still verified, but any certificate a public authority signed for any host now passes, a man in the middle's included. Leave checkServerIdentity out (Node compares the certificate with servername by default).`,
    2,
  );
  // Set anywhere in the process, this turns verification off for every TLS connection, the
  // options' rejectUnauthorized notwithstanding.
  check(
    process.env.NODE_TLS_REJECT_UNAUTHORIZED !== "0",
    'Your code set process.env.NODE_TLS_REJECT_UNAUTHORIZED to "0": Node then accepts any certificate on every TLS connection of the process, so the access key goes to whoever answers. Remove it; a certificate error means a wrong host or servername, not a check to turn off.',
    2,
  );
}

/**
 * The user name and password node-redis will send: it turns username/password (and a URL's)
 * into a credentials provider, and a provider of the learner's own wins over both.
 */
async function credentialsOf(options: RedisClientOptions) {
  const provider = options.credentialsProvider;
  if (provider?.type === "async-credentials-provider") {
    const { username, password } = await call("the credentials provider", () =>
      provider.credentials(),
    );
    return { username, password };
  }
  return { username: options.username, password: options.password };
}

/**
 * What a reconnectStrategy answers where it matters: late in a long outage, whatever the cause
 * node-redis hands it (a strategy that gives up when the server refuses, the usual cause while
 * it restarts, leaves the service dead). Returns the first answer that is not a delay.
 */
const OUTAGE_CAUSES = [
  ["a dropped connection", new Error("Socket closed unexpectedly")],
  [
    "a refused connection (ECONNREFUSED, Redis restarting)",
    Object.assign(new Error("connect ECONNREFUSED 10.0.0.4:6380"), {
      code: "ECONNREFUSED",
      errno: -111,
      syscall: "connect",
    }),
  ],
  [
    "an unknown host (ENOTFOUND, DNS during a failover)",
    Object.assign(new Error("getaddrinfo ENOTFOUND docs-prod.redis.cache.windows.net"), {
      code: "ENOTFOUND",
      syscall: "getaddrinfo",
    }),
  ],
  [
    "a timeout (ETIMEDOUT)",
    Object.assign(new Error("connect ETIMEDOUT 10.0.0.4:6380"), {
      code: "ETIMEDOUT",
      syscall: "connect",
    }),
  ],
] as const;

function givesUp(strategy: unknown, retries: number) {
  if (typeof strategy !== "function") return undefined;
  for (const [cause, error] of OUTAGE_CAUSES) {
    const answer = strategy(retries, error);
    if (!(typeof answer === "number" && answer >= 0 && answer <= 5000)) return { cause, answer };
  }
  return undefined;
}

function givingUpMessage(
  where: string,
  retries: number,
  found: { cause: string; answer: unknown },
) {
  const { cause, answer } = found;
  return `${where} answered ${answer instanceof Error ? `an Error ("${answer.message}")` : JSON.stringify(answer)} for the ${retries}th retry after ${cause}: anything but a delay ends reconnecting for good, so an outage of a few minutes leaves the service dead until someone restarts it. Keep answering reconnectDelay(retries), capped, whatever the cause and however many retries it takes.`;
}

/**
 * An hour of outage on the clock, asked as node-redis asks: a retry after each delay. A strategy
 * that gives up after a time of its own (Date.now() - start > limit) answers every count of
 * retries and still leaves the service dead after a long outage. The clock is faked (Date and
 * performance.now()), so the hour takes no time; nothing else runs meanwhile.
 */
function outlastsAnHour(strategy: unknown): string | undefined {
  if (typeof strategy !== "function") return undefined;
  const hour = 60 * 60_000;
  vi.useFakeTimers({ toFake: ["Date", "performance"], now: Date.now() });
  try {
    let waited = 0;
    for (let retries = 0; waited < hour && retries < 100_000; retries++) {
      const [cause, error] = OUTAGE_CAUSES[retries === 0 ? 0 : 1];
      const answer = strategy(retries, error);
      if (!(typeof answer === "number" && answer >= 0 && answer <= 5000)) {
        return `connect()'s reconnectStrategy answered ${answer instanceof Error ? `an Error ("${answer.message}")` : JSON.stringify(answer)} for the ${retries}th retry, ${Math.round(waited / 60_000)} minutes into an outage (after ${cause}; the check moved the clock on by each delay you answered): a strategy that gives up after a time of its own leaves the service dead once an outage lasts longer, and nobody restarts it. Keep answering reconnectDelay(retries) however long the outage lasts: the delay is capped, so Redis is retried every few seconds.`;
      }
      const step = Math.max(answer, 50);
      vi.advanceTimersByTime(step);
      waited += step;
    }
    return undefined;
  } finally {
    vi.useRealTimers();
  }
}

/** node-redis's client class prototype, where connect() lives: spied on to find a client early. */
function clientPrototype(): { connect(): Promise<unknown> } {
  let proto = Object.getPrototypeOf(createClient());
  while (proto && !Object.hasOwn(proto, "connect")) proto = Object.getPrototypeOf(proto);
  return proto;
}

const AZURE_HOST = "docs-prod.redis.cache.windows.net";
const MANAGED_HOST = "docs-prod.westeurope.redis.azure.net";
// Secrets with the characters real ones carry (base64 keys, JWT tokens): a URL built without
// encodeURIComponent() mangles them.
const ACCESS_KEY = "k3y+Az/9Q=";
const TOKEN = "eyJ0eXAi.eyJvaWQi_x-y.sig/+=";

/**
 * What the options do, not how they are spelled: node-redis's own reading of them, so
 * `{ url: "rediss://...", socket: { servername } }` is the same profile as host, port and tls.
 */
async function optionsFor(profile: Profile) {
  const name = `wb-ocr-${ctx.runId.slice(0, 6)}`;
  const built = await call(`buildOptions({ kind: "${profile.kind}" })`, () =>
    exercise.buildOptions(profile, name),
  );
  check(built && typeof built === "object", "buildOptions() must return an options object.");
  // node-redis writes what it parses from a URL into the object it is given: parse a copy.
  const copy = { ...built, socket: built.socket ? { ...built.socket } : undefined };
  const options = await call(`createClient(buildOptions({ kind: "${profile.kind}" }))`, () => {
    try {
      return createClient(copy as RedisClientOptions).options ?? {};
    } catch (error) {
      // The usual cause: a key or token with / + = written into the URL as it is.
      const advice = copy.url
        ? ` (the url option: encode the user name and password in it with encodeURIComponent())`
        : "";
      throw new Error(`${(error as Error).message}${advice}`);
    }
  });
  const socket = (options.socket ?? {}) as Socket;
  check(
    options.name === name,
    `buildOptions() should name the connection "${name}" (the name it was given); node-redis reads ${JSON.stringify(options.name)}. Set the name option.`,
    2,
  );
  check(
    typeof socket.reconnectStrategy === "function",
    "socket.reconnectStrategy should be your reconnectDelay function, so a dropped connection comes back.",
    2,
  );
  const gaveUp = givesUp(socket.reconnectStrategy, 100);
  if (gaveUp) fail(givingUpMessage("buildOptions()'s socket.reconnectStrategy", 100, gaveUp), 2);
  return { options, socket };
}

describe("connection profiles", () => {
  test("local: plain TCP on port 6379", async () => {
    const { socket } = await optionsFor({ kind: "local" });
    check(
      socket.port === 6379,
      `A local Redis listens on 6379; your options say ${socket.port}.`,
      1,
    );
    check(!socket.tls, "A local Redis does not use TLS: leave tls off for the local profile.", 1);
    // "localhost" (or no host: node-redis then asks for "localhost") resolves to ::1 first on
    // many machines, where a Redis bound to 127.0.0.1 refuses the connection.
    check(
      socket.host === "127.0.0.1",
      `A local profile without a host should connect to 127.0.0.1; node-redis reads host ${JSON.stringify(socket.host)}. "localhost" (and no host, which node-redis turns into "localhost") can resolve to the IPv6 address ::1 first, where a Redis listening on 127.0.0.1 refuses the connection.`,
      2,
    );
    const custom = await optionsFor({ kind: "local", host: "redis.internal", port: 6390 });
    check(
      custom.socket.host === "redis.internal" && custom.socket.port === 6390,
      `A local profile with host "redis.internal" and port 6390 should connect there; node-redis reads host ${custom.socket.host}, port ${custom.socket.port}.`,
      2,
    );
  });

  test("Azure Cache for Redis: TLS on port 6380 with the access key", async () => {
    const { options, socket } = await optionsFor({
      kind: "azure-cache",
      host: AZURE_HOST,
      accessKey: ACCESS_KEY,
    });
    check(
      socket.tls === true,
      "Azure Cache for Redis only accepts TLS connections: set socket.tls to true.",
      1,
    );
    check(
      socket.port === 6380,
      `Azure Cache for Redis serves TLS on port 6380; your options say ${socket.port}.`,
      1,
    );
    check(socket.host === AZURE_HOST, `socket.host should be ${AZURE_HOST}, got ${socket.host}.`);
    check(
      socket.servername === AZURE_HOST,
      `socket.servername should be the host name, ${AZURE_HOST}; node-redis reads ${JSON.stringify(socket.servername)}. Node sends no server name (SNI) in the TLS handshake unless you set it.`,
      2,
    );
    checkVerifiesCertificate(socket, "Azure Cache for Redis");
    const { username, password } = await credentialsOf(options);
    check(
      password === ACCESS_KEY,
      `The access key is the password: node-redis reads the password ${JSON.stringify(password)} for the key ${JSON.stringify(ACCESS_KEY)}. Set password (in a URL, encode it with encodeURIComponent()).`,
      2,
    );
    check(
      username === undefined || username === "default",
      `An access key authenticates the default user: leave username out (or "default"); node-redis reads ${JSON.stringify(username)}.`,
      1,
    );
  });

  test("Azure Managed Redis: TLS on port 10000 with an Entra ID token", async () => {
    const { options, socket } = await optionsFor({
      kind: "azure-managed",
      host: MANAGED_HOST,
      objectId: "5f0c-object-id",
      token: TOKEN,
    });
    check(socket.tls === true, "Azure Managed Redis only accepts TLS: set socket.tls to true.", 1);
    check(
      socket.port === 10000,
      `Azure Managed Redis listens on port 10000; your options say ${socket.port}.`,
      1,
    );
    check(
      socket.host === MANAGED_HOST,
      `socket.host should be ${MANAGED_HOST}, got ${socket.host}.`,
    );
    check(
      socket.servername === MANAGED_HOST,
      `socket.servername should be the host name, ${MANAGED_HOST}; node-redis reads ${JSON.stringify(socket.servername)}. Node sends no server name (SNI) in the TLS handshake unless you set it.`,
      2,
    );
    checkVerifiesCertificate(socket, "Azure Managed Redis");
    const { username, password } = await credentialsOf(options);
    check(
      username === "5f0c-object-id" && password === TOKEN,
      `With Entra ID the user name is the object id and the password is the token; node-redis reads user ${JSON.stringify(username)} and password ${JSON.stringify(password)}.`,
      1,
    );
  });

  test("reconnect delays grow and stay within 5 seconds", async () => {
    // Every retry from 0 to 1000: a delay computed with a bit shift (50 << retries) or another
    // 32-bit trick goes negative somewhere in the twenties, between the samples below.
    const everyRetry = Array.from({ length: 1001 }, (_, n) => n);
    // Several draws per retry: with random jitter one draw proves nothing about growth, the
    // largest of two hundred does (and every draw must respect the bounds). Two hundred, not
    // fifty: a full jitter already capped by retry 5 draws from the same range at 5 and at 1000,
    // and the largest of fifty such draws differ by over 10% about once in a hundred runs.
    const draws = 200;
    const sampled = new Set([0, 1, 2, 3, 5, 10, 20, 50, 1000]);
    const delays = await call("reconnectDelay()", () =>
      everyRetry.flatMap((n) =>
        Array.from(
          { length: sampled.has(n) ? draws : 10 },
          () => [n, exercise.reconnectDelay(n)] as const,
        ),
      ),
    );
    for (const [n, delay] of delays) {
      check(
        typeof delay === "number" && Number.isFinite(delay) && delay >= 0 && delay <= 5000,
        `reconnectDelay(${n}) returned ${JSON.stringify(delay)}: every delay should be a number of milliseconds from 0 to 5000. ${typeof delay === "number" && delay < 0 ? "A delay below 0 is usually an overflow: compute it with 2 ** retries, not a bit shift (<< works on 32 bits)." : "Cap it with Math.min(..., 5000), so the app tries again within 5 s once Redis is back."}`,
        2,
      );
    }
    const most = (n: number) => Math.max(...delays.filter(([r]) => r === n).map(([, d]) => d));
    const [first, fifth, late] = [most(0), most(5), most(1000)];
    // The largest draw alone lets a flat random delay (anywhere from 0 to 5000 at every retry)
    // pass half the time; its average does not grow at all.
    const mean = (n: number) => {
      const own = delays.filter(([r]) => r === n).map(([, d]) => d);
      return own.reduce((a, b) => a + b, 0) / own.length;
    };
    check(
      mean(1000) >= 2 * mean(0),
      `The delay should grow with retries: over ${draws} calls each, reconnectDelay(0) averaged ${Math.round(mean(0))} ms and reconnectDelay(1000) ${Math.round(mean(1000))} ms. Start small; jitter is fine, but the range it is drawn from must grow.`,
      2,
    );
    // Retry 0 alone is not enough: a delay that answers 0 first and then draws anywhere up to
    // the cap at every later retry passes the comparison above, and waits seconds after a blip.
    check(
      mean(1000) >= 1.5 * mean(1),
      `The delay should grow with retries, not only after the first: over ${draws} calls each, reconnectDelay(1) averaged ${Math.round(mean(1))} ms and reconnectDelay(1000) ${Math.round(mean(1000))} ms. Start small after the first retry too (50 ms, 100 ms, ...) and let the range grow towards the cap.`,
      2,
    );
    check(
      fifth > first,
      `The delay should grow with retries: over ${draws} calls each, reconnectDelay(0) reached ${first} and reconnectDelay(5) only ${fifth}.`,
      2,
    );
    // 0.9: two equal ranges drawn from give largest draws a little apart (0.9 ** 200 odds that
    // one falls under nine tenths of the cap); a delay that really falls back is caught here or
    // by fallBack() below.
    check(
      late >= 0.9 * fifth,
      `Once capped, the delay should stay there: over ${draws} calls each, reconnectDelay(5) reached ${fifth}, but reconnectDelay(1000) only ${late}.`,
      2,
    );
    // Seconds for milliseconds (Math.min(2 ** retries, 5)) stays under every bound above and
    // retries five times a millisecond through an outage.
    check(
      late >= 1000,
      `After many retries the delay should reach the seconds range: over ${draws} calls, reconnectDelay(1000) reached only ${late} ms. The delay is in milliseconds and the cap is 5000 (5 s), not 5.`,
      2,
    );
    const fallsBack = fallBack(delays);
    if (fallsBack) {
      fail(
        `The delay should never fall back once it has grown: reconnectDelay(${fallsBack.earlier}) never went below ${fallsBack.floor}, yet reconnectDelay(${fallsBack.retry}) reached at most ${fallsBack.reached}. A delay that wraps around (a modulo, a reset to the start) hammers the server again in the middle of an outage: grow it, then hold it at the cap with Math.min.`,
        2,
      );
    }
  });
});

/**
 * The first retry whose largest draw is clearly below what an earlier retry never went under.
 * Only retries whose draws lie close together (no jitter, or a little) set that floor: with
 * wide jitter (full jitter draws from 0 up) ten draws say nothing about the lowest possible
 * delay. A delay that wraps around (a modulo) or restarts is caught between the samples.
 */
function fallBack(delays: ReadonlyArray<readonly [number, number]>) {
  const byRetry = new Map<number, number[]>();
  for (const [n, d] of delays) byRetry.set(n, [...(byRetry.get(n) ?? []), d]);
  let floor = 0;
  let earlier = 0;
  // The lowest draw of the last retry whose draws lay close together, if the one before it did.
  let tightBefore: number | undefined;
  for (const [retry, draws] of [...byRetry].sort(([a], [b]) => a - b)) {
    const reached = Math.max(...draws);
    if (reached < floor * 0.8) return { retry, reached, earlier, floor };
    const lowest = Math.min(...draws);
    const tight = reached - lowest <= reached * 0.25;
    // A floor needs two retries in a row whose draws lie close together: ten draws of a full
    // jitter (anywhere from 0 to the cap) do so at one retry about once in 250 runs, by chance,
    // and then a later retry's draws fall below it; at two retries in a row, never.
    const both = tight && tightBefore !== undefined ? Math.min(lowest, tightBefore) : undefined;
    if (both !== undefined && both > floor) [floor, earlier] = [both, retry];
    tightBefore = tight ? lowest : undefined;
  }
  return undefined;
}

/** `error` itself, or an error that wraps it as its cause: either way the caller learns it. */
function carries(rejected: unknown, error: Error): boolean {
  return rejected === error || (rejected instanceof Error && rejected.cause === error);
}

async function openAt(observer: Redis, addrs: string[]): Promise<ConnectionInfo[]> {
  return (await learnerConnections(observer)).filter((c) => addrs.includes(c.addr));
}

/** Fails when `live` setInterval()s that withRedis() started still run once it settled (`outcome`). */
function expectNoIntervalLeft(live: number, outcome: string): void {
  check(
    live === 0,
    `withRedis() ${outcome} with ${live} setInterval() it started still running (a health-check PING, say): it goes on for ever against a closed connection, and keeps the process alive. withRedis() must end everything it started on every path: clearInterval() it in finally, before you close.`,
    3,
  );
}

function describeConnections(list: ConnectionInfo[]): string {
  return list.map((c) => `${c.addr}${c.name ? ` named "${c.name}"` : ""}`).join(", ");
}

describe("a live connection", () => {
  test("connect() returns a named connection that answers PING", async () => {
    const observer = await checkClient();
    const name = `wb:learner:${ctx.runId}:api`;
    const before = allLearnerAddrs();
    const client = await call("connect()", () => exercise.connect(ctx.redisUrl, name));
    try {
      check(
        client?.isReady,
        "connect() should resolve once the client is connected (await connect()).",
      );
      const pong = await call("client.ping()", () => client.ping(), 2000);
      check(pong === "PONG", `PING answered ${JSON.stringify(pong)} instead of "PONG".`);
      const mine = await openAt(observer, openedSince(before));
      check(
        mine.length === 1 && mine[0]?.name === name,
        `connect() should open one connection named "${name}"; CLIENT LIST shows ${describeConnections(mine) || "none"}. Pass the name to createClient.`,
        2,
      );
      check(
        client.listenerCount("error") > 0,
        "Your client has no error listener: one dropped connection would crash the process. Add client.on('error', ...) before connect().",
        2,
      );
      // A second service of the same process connects to the same URL while the first client
      // is open: a pool or cache that hands back the open client gives it a connection under
      // another name, and the first withRedis() that closes "its" client closes both.
      const otherName = `${name}-2`;
      const other = await call("connect()", () => exercise.connect(ctx.redisUrl, otherName));
      try {
        const both = await openAt(observer, openedSince(before));
        check(
          other !== client && both.length === 2 && both.some((c) => c.name === otherName),
          `connect() called a second time, with the name "${otherName}", while the client it returned for "${name}" was still open, should open a second connection under that name; CLIENT LIST shows ${describeConnections(both) || "none"}${other === client ? ", and it returned the very same client" : ""}. Each call opens a client of its own: one handed back from a pool or cache carries another service's name, and closing it (as withRedis() does) cuts off everyone else who holds it.`,
          2,
        );
        // Two instances of one service in a process (two OCR workers) share a name: a pool
        // keyed by URL and name hands the second the first one's client, and the first
        // withRedis() to close it closes it under the other.
        const twin = await call("connect()", () => exercise.connect(ctx.redisUrl, name));
        try {
          const all = await openAt(observer, openedSince(before));
          check(
            twin !== client && twin !== other && all.length === 3,
            `connect() called a third time, with the name "${name}" again, while the client it returned for that name was still open, should open a connection of its own; ${twin === client ? "it returned the very same client" : twin === other ? `it returned the client of "${otherName}"` : `CLIENT LIST shows ${describeConnections(all) || "none"}`}. Two workers of one service share a name: a pool or cache keyed by URL and name hands the second the first one's client, and the first to close it (as withRedis() does) cuts the other off. Create a new client on every call.`,
            2,
          );
        } finally {
          if (twin !== client && twin !== other) twin?.destroy();
        }
      } finally {
        if (other !== client) other?.destroy();
      }
      const strategy = client.options?.socket?.reconnectStrategy;
      const delay = typeof strategy === "function" ? strategy(3, new Error("drop")) : undefined;
      check(
        typeof delay === "number" && delay >= 0 && delay <= 5000,
        `connect() should reconnect with your growing, capped delay: give createClient socket.reconnectStrategy (your reconnectDelay); it ${typeof strategy === "function" ? (delay instanceof Promise ? "answered a Promise for the 3rd retry: node-redis wants a number, an Error or false at once, and for anything else falls back to its own strategy, which retries a refused login for ever. Return the number (or the Error) directly, without async" : `answered ${JSON.stringify(delay)} for the 3rd retry`) : strategy === false ? "is false, which turns reconnecting off" : "has none"}.`,
        3,
      );
      // A strategy that answers an Error after N retries, or for some causes, ends reconnecting
      // for good: a worker outlives a short blip but stays dead after a failover.
      const gaveUp = givesUp(strategy, 100);
      if (gaveUp) fail(givingUpMessage("connect()'s reconnectStrategy", 100, gaveUp), 3);
      const deadline = outlastsAnHour(strategy);
      if (deadline) fail(deadline, 3);
      // Many draws: a jittered strategy answers anything from 0 up in one call.
      const lateDraws =
        typeof strategy === "function"
          ? Array.from({ length: 50 }, () => strategy(100, new Error("drop")))
          : [];
      const longest = Math.max(...lateDraws.map((d) => (typeof d === "number" ? d : 0)));
      check(
        longest >= 1000,
        `connect()'s reconnectStrategy answered at most ${longest} ms for the 100th retry (over 50 calls): through a long outage it would retry many times a second. The strategy answers milliseconds, like reconnectDelay: pass reconnectDelay itself, not a delay divided or converted to seconds.`,
        3,
      );
      // Asked for retry 0 after all those: node-redis counts retries from 0 again after every
      // successful reconnect, so the answer must follow its argument, not a count of calls. A
      // count of your own that starts again on "ready" (a Go backoff's Reset()) does the same:
      // the client announces before each draw the successful reconnect that ends an outage.
      const firstDraws =
        typeof strategy === "function"
          ? Array.from({ length: 50 }, () => {
              client.emit("ready");
              return strategy(0, new Error("drop"));
            })
          : [];
      const average = (draws: unknown[]) =>
        draws.reduce((sum: number, d) => sum + (typeof d === "number" ? d : 0), 0) / draws.length;
      check(
        // Three quarters: reconnectDelay itself is held to half (its own test), a count of calls
        // answers about the cap for both.
        average(firstDraws) <= 0.75 * average(lateDraws),
        `connect()'s reconnectStrategy answered ${Math.round(average(firstDraws))} ms on average for retry 0, asked after retry 100, which averaged ${Math.round(average(lateDraws))} ms: it does not follow the retries argument node-redis passes it. A count of your own keeps growing across outages and never starts again, so after one long outage every later blip waits the full cap (the check emitted "ready" in between, as a successful reconnect does). Compute the delay from the retries argument (pass reconnectDelay itself).`,
        3,
      );
    } finally {
      client?.destroy();
    }
  });

  test.skipIf(!ctx.privateServer)(
    "connect()'s client comes back after the server drops it",
    async () => {
      const observer = await checkClient();
      const before = allLearnerAddrs();
      const name = `wb:learner:${ctx.runId}:drop`;
      const client = await call("connect()", () => exercise.connect(ctx.redisUrl, name));
      try {
        check(
          client.listenerCount("error") > 0,
          "Your client has no error listener, so the check does not drop its connection: the \"error\" event that follows would crash the process. Add client.on('error', ...) before connect().",
          2,
        );
        const [first] = openedSince(before);
        // What a network blip or a failover looks like from the client: the server closes it.
        await observer.sendCommand(["CLIENT", "KILL", "ADDR", first ?? ""]);
        const back = await until(
          async () => client.isReady && openedSince(before).length > 1,
          3000,
        );
        check(
          back,
          "After the server dropped the connection, your client did not reconnect within 3 s. Give createClient a reconnectStrategy and an error listener that logs the error: a listener that throws it again ends the reconnect as surely as no listener.",
          3,
        );
        check(
          client.listenerCount("error") > 0,
          "After the first dropped connection your client has no error listener left, so the next drop would crash the process: client.once('error', ...) removes its listener after one event. Listen with client.on('error', ...).",
          2,
        );
        const pong = await call("client.ping() after a reconnect", () => client.ping(), 2000);
        check(pong === "PONG", `After reconnecting, PING answered ${JSON.stringify(pong)}.`);
        const again = await openAt(
          observer,
          openedSince(before).filter((addr) => addr !== first),
        );
        check(
          again.length > 0 && again.every((c) => c.name === name),
          `After the reconnect, CLIENT LIST shows ${describeConnections(again) || "no connection of yours"} instead of one named "${name}": the name was lost with the old connection. node-redis names each new connection (HELLO ... SETNAME) only from the name option; a CLIENT SETNAME sent after connect() is not repeated. Pass name to createClient.`,
          2,
        );
      } finally {
        client?.destroy();
      }
    },
  );

  test.skipIf(!ctx.privateServer)(
    "connect()'s client keeps retrying a refused login once it has been ready",
    async () => {
      const admin = await checkClient("acl");
      const { username, password } = await aclAccount();
      const url = new URL(ctx.redisUrl);
      url.username = username;
      url.password = password;
      const name = `wb:learner:${ctx.runId}:rotate`;
      const before = allLearnerAddrs();
      const client = await call("connect()", () => exercise.connect(url.toString(), name));
      try {
        // The secret changes under a running service (a key rotated, a token expired), and its
        // connection drops: each reconnect is refused until the new secret is in place.
        await admin.sendCommand(["ACL", "SETUSER", username, "resetpass", ">rotated-meanwhile"]);
        for (const addr of openedSince(before)) dropConnection(addr);
        const refused = await loginRefusalLogged(admin, username);
        await admin.sendCommand(["ACL", "SETUSER", username, "resetpass", `>${password}`]);
        // A client that gave up is closed for good: no need to wait the 6 s out.
        const back =
          refused && (await until(() => client.isReady || !client.isOpen, 6000)) && client.isReady;
        check(
          back,
          `Once connected, your client ${refused ? "did not come back within 6 s after its password worked again" : "did not try to log in again within 6 s of a dropped connection"}: the check changed the account's password and dropped the connection (as a rotated key or an expired token does to a running service), then put the password back. A client that gives up on a refused login after it has been ready stays dead until someone restarts the service. Give up on a refused login only before the first ready; after it, keep answering reconnectDelay(retries).`,
          3,
        );
      } finally {
        client?.destroy();
      }
    },
  );

  // A proxy on a port of its own stands in for a Redis that starts late: plain TCP only.
  test.skipIf(!ctx.privateServer || ctx.redisUrl.startsWith("rediss:"))(
    "connect() waits for a Redis that is still starting",
    async () => {
      const port = await freePort();
      const url = new URL(ctx.redisUrl);
      url.port = String(port);
      const name = `wb:learner:${ctx.runId}:early`;
      const attempt = scope("early-start");
      // The client connect() made, found while it is still connecting (never ready yet).
      const connecting = vi.spyOn(clientPrototype(), "connect");
      const pending = settled(
        attempt.run(() => Promise.resolve().then(() => exercise.connect(url.toString(), name))),
      );
      // Refused for a while, as a Redis that is still starting refuses; then it listens: as
      // soon as a second attempt was refused (so one retry is not all there is), or after
      // 400 ms for a strategy that waits longer than that between attempts.
      const refusedTwice = until(() => failedConnects(attempt) >= 2, 400);
      const early = await Promise.race([pending, refusedTwice.then(() => "waiting" as const)]);
      const refusals = failedConnects(attempt);
      const notListeningYet = (outcome: string) =>
        `connect() to a Redis that was not listening yet ${outcome}. A service often starts a moment before its Redis (a deploy, a restart of both), and a refused connection is what a starting Redis answers: keep retrying with your delay. Give up only when the login itself is refused (WRONGPASS, NOAUTH).`;
      const proxy = lateRedis();
      try {
        if (early !== "waiting") {
          if ("value" in early) (early.value as Redis | undefined)?.destroy?.();
          fail(
            notListeningYet(
              "error" in early
                ? `rejected after ${refusals} refused connection${refusals === 1 ? "" : "s"} (${early.error instanceof Error ? early.error.message : String(early.error)})`
                : "resolved",
            ),
            3,
          );
        }
        // Asked now, before the first ready, as in a long startup outage: a cap on retries
        // before the first ready gives up on a Redis that takes a minute to come back.
        for (const client of connecting.mock.contexts as Redis[]) {
          const strategy = client.options?.socket?.reconnectStrategy;
          const gaveUp = givesUp(strategy, 100);
          if (!gaveUp) continue;
          client.destroy();
          // One that gives up at once has made connect() reject, or is about to.
          const atOnce = givesUp(strategy, 1);
          if (atOnce)
            fail(
              notListeningYet(
                `rejected after ${refusals} refused connection${refusals === 1 ? "" : "s"} (your reconnectStrategy answered ${atOnce.answer instanceof Error ? `an Error ("${atOnce.answer.message}")` : JSON.stringify(atOnce.answer)} for the 1st retry)`,
              ),
              3,
            );
          fail(
            `${givingUpMessage("connect()'s reconnectStrategy", 100, gaveUp)} The check asked while connect() was still waiting for a Redis that refused it, before your client was ever ready: a service started during an outage (a restart of both, a failover) gives up at startup. Before the first ready, give up only on a refused login (WRONGPASS, NOAUTH).`,
            3,
          );
        }
        await new Promise<void>((resolve) => proxy.listen(port, "127.0.0.1", resolve));
        // The cap (5 s) plus a handshake: a right strategy may be in its longest wait just now.
        const outcome = await Promise.race([pending, sleep(6000).then(() => "pending" as const)]);
        if (outcome !== "pending" && "value" in outcome) (outcome.value as Redis)?.destroy?.();
        check(
          outcome !== "pending" && "value" in outcome,
          `connect() to a Redis that started listening a moment later ${outcome === "pending" ? "had not connected 6 s after it did: your reconnect strategy waits too long between early retries, or stopped" : `rejected (${"error" in outcome && outcome.error instanceof Error ? outcome.error.message : String(outcome)}): it gave up while Redis was starting`}. Keep retrying with your growing delay until it answers; give up only when the login itself is refused.`,
          3,
        );
      } finally {
        connecting.mockRestore();
        attempt.crash();
        proxy.close();
      }
    },
  );

  test.skipIf(!ctx.privateServer)(
    "connect() with a wrong password fails at once and leaves nothing trying",
    async () => {
      const { username } = await aclAccount();
      const url = new URL(ctx.redisUrl);
      url.username = username;
      const password = unmistakablePassword();
      url.password = password;
      // No "pass" or "auth" in it: the reason must come from the error, not the name.
      const name = `wb:learner:${ctx.runId}:deploy`;
      const cleanup: (() => void)[] = [];
      const logged = captureConsole();
      let rejection: unknown;
      try {
        await expectRefusedLoginFails({
          what: "connect()",
          start: async () => {
            try {
              return await exercise.connect(url.toString(), name);
            } catch (error) {
              rejection = error;
              throw error;
            }
          },
          keep: (client) => cleanup.push(() => (client as Redis | undefined)?.destroy?.()),
          abandon: (crash) => cleanup.push(crash),
          password,
          hint: 3,
          logins: 1,
        });
        // Part of a secret is a secret too: "abc…" tells whoever reads the logs where to start.
        const messages = messagesOf(rejection);
        const inError = pieceOf(password, messages.join("\n"));
        check(
          inError === undefined,
          `connect() rejected with an error whose message carries a piece of the password it tried ("${inError}" of the check's ${password.length} characters): error messages end up in logs and on dashboards, and every character you show is one an attacker need not guess. Say which user or host failed, never any of the secret (not its first characters either).`,
          3,
        );
        const inLog = pieceOf(password, logged.text());
        check(
          inLog === undefined,
          `While connect() tried a wrong password, your code logged ${inLog === password ? "the password" : `a piece of the password ("${inLog}")`}: "${logged.lineWith(inLog ?? "").replaceAll(password, "***")}". Logs are read by many and kept for long. Log the connection's name, or a URL without its password (new URL(url) with password = "***"), never the secret.`,
          3,
        );
      } finally {
        logged.stop();
        for (const done of cleanup) done();
      }
    },
  );

  // The same proxy as above: Redis refuses connections for a while, then answers, and refuses
  // the login. A strategy that gives up on a refused login only when it comes first (retries
  // === 0) retries it for ever here: a service started before its Redis, with a bad secret.
  test.skipIf(!ctx.privateServer || ctx.redisUrl.startsWith("rediss:"))(
    "connect() with a wrong password fails also when Redis was still starting",
    async () => {
      const { username } = await aclAccount();
      const port = await freePort();
      const url = new URL(ctx.redisUrl);
      url.port = String(port);
      url.username = username;
      url.password = unmistakablePassword();
      const name = `wb:learner:${ctx.runId}:early-deploy`;
      const attempt = scope("early-refused-login");
      const pending = settled(
        attempt.run(() => Promise.resolve().then(() => exercise.connect(url.toString(), name))),
      );
      const early = await Promise.race([
        pending,
        until(() => failedConnects(attempt) >= 2, 400).then(() => "waiting" as const),
      ]);
      // Settled before Redis listened: "connect() waits for a Redis that is still starting" says why.
      if (early !== "waiting") {
        if ("value" in early) (early.value as Redis | undefined)?.destroy?.();
        return;
      }
      const proxy = lateRedis();
      try {
        await new Promise<void>((resolve) => proxy.listen(port, "127.0.0.1", resolve));
        const outcome = await Promise.race([pending, sleep(6000).then(() => "pending" as const)]);
        if (outcome !== "pending" && "value" in outcome) (outcome.value as Redis)?.destroy?.();
        check(
          outcome !== "pending" && "error" in outcome,
          `connect() with a wrong password, to a Redis that was still starting (it refused the first connections, then every login: WRONGPASS), ${outcome === "pending" ? "had not settled 6 s after Redis answered" : "resolved"}. Your strategy did not give up on this refused login: if it never gives up on one, start with the test "connect() with a wrong password fails at once"; if it gives up only when retries is 0, that is the cause here: after refused connections, retries is no longer 0, and a service started a moment before its Redis with a bad secret hangs. Give up on a refused login whenever the client has never been ready, whatever retries says (a flag set on "ready").`,
          3,
        );
      } finally {
        attempt.crash();
        proxy.close();
      }
    },
  );

  // The other refused login: a deploy whose secret never reached it (an unset REDIS_PASSWORD)
  // connects with no password to a Redis that wants one, and Redis answers NOAUTH, not
  // WRONGPASS. A redis-server of the check's own, started with requirepass, answers so.
  test.skipIf(!ctx.privateServer)(
    "connect() with no password to a Redis that wants one fails at once (NOAUTH)",
    async () => {
      const server = await startPrivateServer(["--requirepass", randomBytes(12).toString("hex")]);
      const attempt = scope("no-password");
      try {
        const outcome = await settled(
          within(
            attempt.run(() =>
              Promise.resolve().then(() =>
                exercise.connect(
                  `redis://127.0.0.1:${server.port}`,
                  `wb:learner:${ctx.runId}:unset`,
                ),
              ),
            ),
            5000,
            "connect()",
          ),
        );
        if ("value" in outcome) (outcome.value as Redis | undefined)?.destroy?.();
        else failIfNotWritten(outcome.error);
        const reasons = "error" in outcome ? messagesOf(outcome.error) : [];
        check(
          "error" in outcome && !(outcome.error instanceof CheckFailure),
          `connect() with no password, to a Redis that requires one (it answered every login with NOAUTH, as Redis does when a deploy's secret is missing), ${"value" in outcome ? "resolved" : "had neither resolved nor rejected 5 s later"}. NOAUTH is a refused login as much as WRONGPASS is: before the first ready, give up on either (/^(WRONGPASS|NOAUTH)/), or a service deployed without its secret hangs at startup.`,
          3,
        );
        check(
          /NOAUTH|auth|password|credential|login/i.test(reasons.join(" ")),
          `connect() with no password, to a Redis that answered NOAUTH, rejected, as it should, but with "${reasons.join(" <- ")}", which does not say the login was refused. Reject with the error node-redis reported (the cause your reconnectStrategy was given), as it is or as the cause of yours.`,
          3,
        );
      } finally {
        attempt.crash();
        await server.stop();
      }
    },
  );

  test("withRedis() lets a command the work started finish before it closes", async () => {
    const observer = await checkClient();
    const audit = freshKey("audit");
    const before = allLearnerAddrs();
    // Work that fires a write and returns without awaiting it: close() sends it and waits for
    // its reply, destroy() drops it on the floor.
    await call("withRedis()", () =>
      exercise.withRedis(ctx.redisUrl, `wb:learner:${ctx.runId}:audit`, async (client) => {
        void client.set(audit, "contract-17 indexed").catch(() => {});
        return "ok";
      }),
    );
    // Looked at at once, on the client's side: an awaited close() has let go of the socket by
    // then, and a close() left running still waits for the SET's reply.
    const stillOpen = openedSince(before).filter((addr) => learnerAddrs().has(addr));
    check(
      stillOpen.length === 0,
      `withRedis() resolved while its connection (${stillOpen.join(", ")}) was still waiting for the reply to SET ${audit}: the close() was not awaited. Await client.close() in finally, so withRedis() resolves once the connection is really gone and a failure to close reaches the caller.`,
      3,
    );
    const value = await observer.get(audit);
    check(
      value === "contract-17 indexed",
      `The work sent SET ${audit} without awaiting it, and after withRedis() the key holds ${JSON.stringify(value)}: the command was dropped. Close with close(), which waits for pending replies; destroy() discards them.`,
      3,
    );
  });

  test("withRedis() closes the connection after the work, also when the work throws", async () => {
    const observer = await checkClient();
    const name = `wb:learner:${ctx.runId}:job`;
    const result = { docId: "contract-17", pages: 40 };
    let before = allLearnerAddrs();
    let secondStep: string | undefined;
    let named: ConnectionInfo[] = [];
    let errorListeners = 0;
    // withRedis() runs in a scope of its own, so a setInterval() it leaves running once it
    // resolved (a health-check PING, say) can be counted.
    const job = scope("withRedis");
    const intervals = scopeTimers(job, { repeating: true });
    const returned = await call("withRedis()", () =>
      job.run(() =>
        exercise.withRedis(ctx.redisUrl, name, async (client) => {
          await client.ping();
          errorListeners = client.listenerCount("error");
          named = await openAt(observer, openedSince(before));
          // A second step after an await: a withRedis() that closes before the work has settled
          // (return work(client) in try, without await) closes the client under it.
          try {
            await client.ping();
          } catch (error) {
            secondStep = error instanceof Error ? error.message : String(error);
          }
          return result;
        }),
      ),
    );
    expectNoIntervalLeft(intervals.live(), "resolved");
    if (secondStep !== undefined) {
      fail(
        `The work's second command, sent after its first await, failed with "${secondStep}": withRedis() closed the client while the work was still running. Inside try, write return await work(client), so finally runs only once the work has finished.`,
        3,
      );
    }
    check(
      named.length === 1 && named[0]?.name === name,
      `withRedis() should run the work on one connection named "${name}" (the name it was given); while the work ran, CLIENT LIST showed ${describeConnections(named) || "no connection of yours"}. Pass the name on to connect().`,
      2,
    );
    // A client of withRedis()'s own making skips what connect() sets up: a network blip in the
    // middle of a job then crashes the worker instead of being logged and reconnected.
    check(
      errorListeners > 0,
      "The client withRedis() handed to the work had no error listener: a connection dropped in the middle of a job would crash the process. Open it with your connect(url, name), which listens for errors before connecting.",
      2,
    );
    check(
      sameValue(returned, result),
      `withRedis() should return what the work returns (${JSON.stringify(result)}); got ${JSON.stringify(returned)}.`,
    );
    let opened = openedSince(before);
    check(opened.length > 0, "withRedis() ran the work without opening a connection of its own.");
    if (!(await until(async () => (await openAt(observer, opened)).length === 0, 1000))) {
      fail(
        `The connection is still open after withRedis() returned (${describeConnections(await openAt(observer, opened))}). Close the client when the work is done.`,
        3,
      );
    }

    before = allLearnerAddrs();
    let rejected: unknown;
    // A failing job often has a write in flight (an audit line, a status): the close on the
    // error path must let it through as well.
    const failure = freshKey("failure");
    const workError = new Error("OCR service unavailable");
    let runs = 0;
    await call("withRedis() with work that throws", () =>
      job.run(() =>
        exercise
          .withRedis(ctx.redisUrl, name, async (client) => {
            runs++;
            void client.set(failure, "contract-17 failed").catch(() => {});
            throw workError;
          })
          .catch((error: unknown) => {
            rejected = error;
          }),
      ),
    );
    const leftOnError = intervals.live();
    intervals.stop();
    check(
      carries(rejected, workError),
      `When the work throws, withRedis() should reject with that same error (or one whose cause it is); it ${rejected === undefined ? "resolved" : `rejected with ${String(rejected)}`}.`,
      3,
    );
    // A job has effects (a page billed, a status sent): whether to run it again is its caller's
    // decision, made knowing those effects (lesson 11), not a connection helper's.
    check(
      runs === 1,
      `withRedis() was called once, with work that throws, and ran the work ${runs} times: it retried the job. A job has effects (a model call billed, a status published), and running it again is for the caller to decide. Run the work once and let its error reach the caller.`,
      3,
    );
    expectNoIntervalLeft(leftOnError, "rejected with the work's error");
    opened = openedSince(before);
    if (!(await until(async () => (await openAt(observer, opened)).length === 0, 1000))) {
      fail(
        `The connection is still open after the work threw (${describeConnections(await openAt(observer, opened))}). Close it in a finally block.`,
        3,
      );
    }
    const recorded = await observer.get(failure);
    check(
      recorded === "contract-17 failed",
      `The work sent SET ${failure} without awaiting it and then threw; after withRedis() the key holds ${JSON.stringify(recorded)}: the command was dropped on the error path. Close with close() in finally on every path; destroy() discards pending commands.`,
      3,
    );

    // Work that is not an async function throws before it returns a promise (a JSON.parse of a
    // bad argument): work(client).finally(...) never gets a promise to attach to.
    before = allLearnerAddrs();
    rejected = undefined;
    const badInput = new SyntaxError("Unexpected token < in the OCR job's JSON");
    await call("withRedis() with work that throws before returning a promise", () =>
      exercise
        .withRedis(ctx.redisUrl, name, () => {
          throw badInput;
        })
        .catch((error: unknown) => {
          rejected = error;
        }),
    );
    check(
      carries(rejected, badInput),
      `The work threw at once (a plain function, not an async one, so no promise came back), and withRedis() ${rejected === undefined ? "resolved" : `rejected with ${String(rejected)}`}: it should reject with that same error.`,
      3,
    );
    opened = openedSince(before);
    if (!(await until(async () => (await openAt(observer, opened)).length === 0, 1000))) {
      fail(
        `The work threw at once, before returning a promise, and the connection stayed open (${describeConnections(await openAt(observer, opened))}): work(client).finally(...) or .then(...) never runs when work(client) throws instead of returning. Call the work inside try (return await work(client)) and close in finally.`,
        3,
      );
    }
  });
});
