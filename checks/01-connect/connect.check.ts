import type { RedisClientOptions } from "redis";
import { describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  connectionsNamed,
  ctx,
  eventually,
  fail,
  loadExercise,
  type Redis,
} from "../kit.ts";

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
  reconnectStrategy?: unknown;
}

async function optionsFor(profile: Profile) {
  const options = await call(`buildOptions({ kind: "${profile.kind}" })`, () =>
    exercise.buildOptions(profile, "wb-ocr-worker"),
  );
  check(options && typeof options === "object", "buildOptions() must return an options object.");
  const socket = (options.socket ?? {}) as Socket;
  check(
    options.name === "wb-ocr-worker",
    `buildOptions() should name the connection "wb-ocr-worker" (got ${JSON.stringify(options.name)}). Set the name option.`,
    2,
  );
  check(
    typeof socket.reconnectStrategy === "function",
    "socket.reconnectStrategy should be your reconnectDelay function, so a dropped connection comes back.",
    2,
  );
  return { options, socket };
}

const AZURE_HOST = "docs-prod.redis.cache.windows.net";
const MANAGED_HOST = "docs-prod.westeurope.redis.azure.net";

describe("connection profiles", () => {
  test("local: plain TCP on port 6379", async () => {
    const { socket } = await optionsFor({ kind: "local" });
    check(
      socket.port === 6379,
      `A local Redis listens on 6379; your options say ${socket.port}.`,
      1,
    );
    check(!socket.tls, "A local Redis does not use TLS: leave tls off for the local profile.", 1);
  });

  test("Azure Cache for Redis: TLS on port 6380 with the access key", async () => {
    const { options, socket } = await optionsFor({
      kind: "azure-cache",
      host: AZURE_HOST,
      accessKey: "k3y",
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
    check(options.password === "k3y", "The access key is the password: set password.", 2);
  });

  test("Azure Managed Redis: TLS on port 10000 with an Entra ID token", async () => {
    const { options, socket } = await optionsFor({
      kind: "azure-managed",
      host: MANAGED_HOST,
      objectId: "5f0c-object-id",
      token: "eyJ-token",
    });
    check(socket.tls === true, "Azure Managed Redis only accepts TLS: set socket.tls to true.", 1);
    check(
      socket.port === 10000,
      `Azure Managed Redis listens on port 10000; your options say ${socket.port}.`,
      1,
    );
    check(
      options.username === "5f0c-object-id" && options.password === "eyJ-token",
      "With Entra ID the user name is the object id and the password is the token.",
      1,
    );
  });

  test("reconnect delays grow and stay within 5 seconds", async () => {
    const delays = await call("reconnectDelay()", () =>
      [0, 1, 2, 5, 10, 50].map((n) => exercise.reconnectDelay(n)),
    );
    for (const [i, delay] of delays.entries()) {
      check(
        typeof delay === "number" && delay > 0 && delay <= 5000,
        `reconnectDelay() should return between 1 and 5000 ms; got ${delay} (call ${i + 1}).`,
      );
    }
    check(
      (delays[3] ?? 0) > (delays[0] ?? 0),
      `The delay should grow with retries: reconnectDelay(0) = ${delays[0]}, reconnectDelay(5) = ${delays[3]}.`,
    );
  });
});

describe("a live connection", () => {
  test("connect() returns a named connection that answers PING", async () => {
    const observer = await checkClient();
    const name = `wb:learner:${ctx.runId}:api`;
    const client = await call("connect()", () => exercise.connect(ctx.redisUrl, name));
    try {
      check(
        client?.isReady,
        "connect() should resolve once the client is connected (await connect()).",
      );
      const pong = await call("client.ping()", () => client.ping(), 2000);
      check(pong === "PONG", `PING answered ${JSON.stringify(pong)} instead of "PONG".`);
      const named = await connectionsNamed(observer, name);
      check(
        named.length === 1,
        `CLIENT LIST shows no connection named "${name}": pass the name to createClient.`,
        2,
      );
      check(
        client.listenerCount("error") > 0,
        "Your client has no error listener: one dropped connection would crash the process. Add client.on('error', ...) before connect().",
        2,
      );
    } finally {
      client?.destroy();
    }
  });

  test("withRedis() closes the connection after the work, also when the work throws", async () => {
    const observer = await checkClient();
    const name = `wb:learner:${ctx.runId}:job`;
    const result = await call("withRedis()", () =>
      exercise.withRedis(ctx.redisUrl, name, (client) => client.ping()),
    );
    check(
      result === "PONG",
      `withRedis() should return what the work returns; got ${JSON.stringify(result)}.`,
    );
    await eventually(
      async () => (await connectionsNamed(observer, name)).length === 0,
      1000,
      "The connection is still open after withRedis() returned. Close the client when the work is done.",
      3,
    );

    let rejected: unknown;
    await exercise
      .withRedis(ctx.redisUrl, name, async () => {
        throw new Error("OCR service unavailable");
      })
      .catch((error: unknown) => {
        rejected = error;
      });
    if (!(rejected instanceof Error) || rejected.message !== "OCR service unavailable") {
      fail("When the work throws, withRedis() should reject with that same error.", 3);
    }
    await eventually(
      async () => (await connectionsNamed(observer, name)).length === 0,
      1000,
      "The connection is still open after the work threw. Close it in a finally block.",
      3,
    );
  });
});
