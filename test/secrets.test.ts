/**
 * "Passwords are never printed": a known password goes through every output path (the check's
 * verdict with --verbose and --json, learner output, a learner error and its stack, doctor) and
 * is found nowhere, whichever form REDIS_URL takes.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "redis";
import type { UserConsoleLog } from "vitest";
import { afterAll, beforeAll, expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import CheckReporter from "../src/check/reporter.ts";
import { forgetSecrets } from "../src/redis/redact.ts";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";
import { cli, cliAsync } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

/** With an @, which a pattern that stops at the first @ prints half of. */
const PASSWORD = "Wr@ng-S3cret_pw";
const OBJECT_ID = "0b7a4c1e-5d2f-4e8a-9c3b-1f6d8e2a7b90";
const TOKEN = "eyJ0eXAiOiJKV1Qi.T0k3n-Secret";
/** What must never appear: any part of the password, token or object id. */
const LEAKS = ["S3cret", "Wr@ng", "Wr%40ng", "T0k3n", OBJECT_ID, OBJECT_ID.slice(0, 8)];

const scratch = scratchDir("secrets");
let server: PrivateServer;

beforeAll(async () => {
  server = await startPrivateServer(["--requirepass", PASSWORD]);
  const admin = createClient({
    url: `redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}`,
  });
  await admin.connect();
  // The Azure Managed Redis form: an Entra object id as the user, an access token as password.
  await admin.sendCommand(["ACL", "SETUSER", OBJECT_ID, "on", `>${TOKEN}`, "~*", "&*", "+@all"]);
  admin.destroy();

  // The learner logs the URL and the password every way it can, then throws an error with both.
  const lesson = loadCatalog().find((l) => l.number === "01");
  if (!lesson) throw new Error("lesson 01 is missing");
  const file = join(scratch.dir, lesson.id, lesson.exercise);
  mkdirSync(join(scratch.dir, lesson.id), { recursive: true });
  copyFileSync(lesson.solution, file);
  const leaky = readFileSync(file, "utf8").replace(
    "export async function connect(url: string, name: string): Promise<Redis> {",
    `export async function connect(url: string, name: string): Promise<Redis> {
  const password = decodeURIComponent(new URL(url).password);
  console.log(url);
  console.log("password:", password, new URL(url).username);
  console.error({ url, password });
  process.stdout.write(\`raw \${password}\\n\`);
  throw new Error(\`cannot reach \${url} with \${password}\`);`,
  );
  writeFileSync(file, `console.log("loaded with", process.env.WORKBOOK_REDIS_URL);\n${leaky}`);
}, 60_000);

afterAll(async () => {
  await server?.stop();
  scratch.remove();
});

function expectNoLeak(what: string, text: string): void {
  for (const leak of LEAKS) expect(text, `${what} printed ${leak}`).not.toContain(leak);
}

const forms = () => ({
  "a URL with the password encoded": `redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}`,
  "a URL with a raw @ in the password": `redis://default:${PASSWORD}@127.0.0.1:${server.port}`,
  "the Azure portal's connection string": `127.0.0.1:${server.port},password=${PASSWORD},ssl=False,abortConnect=False`,
  "an Entra object id and token": `redis://${OBJECT_ID}:${encodeURIComponent(TOKEN)}@127.0.0.1:${server.port}`,
});

// The forms are tried at the same time, each its two ways in turn: the commands mostly wait
// (on their start, on Redis), and in turn they took most of this file's time.
test("check --verbose and --json: learner output, errors and stacks never show the password", async () => {
  const tryForm = async ([form, url]: [string, string]) => {
    for (const flag of ["--verbose", "--json"]) {
      const { code, out, err } = await cliAsync(["check", "01", flag], {
        WORKBOOK_WORKSPACE: scratch.dir,
        REDIS_URL: url,
      });
      // It ran against the password-protected server and failed on the learner's error.
      expect(code, `${form} ${flag}: ${out}${err}`).toBe(1);
      expect(out).toContain("cannot reach");
      expectNoLeak(`check ${flag} with ${form}`, out + err);
    }
  };
  await settleAll(Object.entries(forms()).map(tryForm));
}, 300_000);

test("doctor connects with every form of REDIS_URL and shows none of its secrets", async () => {
  const tryForm = async ([form, url]: [string, string]) => {
    for (const args of [["doctor"], ["doctor", "--json"]]) {
      const { out, err } = await cliAsync(args, {
        WORKBOOK_WORKSPACE: scratch.dir,
        REDIS_URL: url,
      });
      expect(out, form).toMatch(/answers: Redis/);
      expectNoLeak(`${args.join(" ")} with ${form}`, out + err);
    }
  };
  await settleAll(Object.entries(forms()).map(tryForm));
}, 300_000);

/** Waits for every command to end, then fails with the first failure: none outlives the test. */
async function settleAll(work: Promise<void>[]): Promise<void> {
  for (const end of await Promise.allSettled(work)) if (end.status === "rejected") throw end.reason;
}

test("a REDIS_URL that cannot be used is refused without being echoed", () => {
  for (const url of [
    `h1:6380,h2:6380,password=${PASSWORD},ssl=True`,
    `${PASSWORD}`,
    `https://:${PASSWORD}@example.com`,
  ]) {
    const check = cli(["check", "01", "--solution"], { REDIS_URL: url });
    expect(check.code).toBe(2);
    expect(check.err).toMatch(/REDIS_URL/);
    const doctor = cli(["doctor", "--json"], { REDIS_URL: url });
    expect(doctor.out).toMatch(/rediss:\/\/:<access key>@/);
    expectNoLeak(`a refused ${url}`, check.out + check.err + doctor.out + doctor.err);
  }
}, 120_000);

test("the events file the check process writes never holds the password", () => {
  const events = join(scratch.dir, "events.jsonl");
  const saved = { ...process.env };
  process.env.WORKBOOK_RESULTS = events;
  process.env.WORKBOOK_REDIS_URL = `redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:1`;
  try {
    const reporter = new CheckReporter();
    reporter.onUserConsoleLog({ content: `logged ${PASSWORD}\n` } as UserConsoleLog);
    reporter.onTestRunEnd([], [{ name: "Error", message: `failed with ${PASSWORD}` }]);
  } finally {
    process.env = saved;
    forgetSecrets();
  }
  const written = readFileSync(events, "utf8");
  expect(written).toContain("logged ***");
  expectNoLeak("the events file", written);
});
