/** The pure core: parsing and deciding, tested without processes or servers. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { commandUsage, helpPointer, parseArgs, UsageError } from "../src/args.ts";
import { type Lesson, parseMistakeHeader } from "../src/catalog.ts";
import { CLAIMED_ELSEWHERE } from "../src/check/events.ts";
import { applyPatch } from "../src/check/patch.ts";
import { renderVerdict } from "../src/check/render.ts";
import { claim, enterAlone, enterShared } from "../src/check/shard-claims.ts";
import { parseTscOutput } from "../src/check/typecheck.ts";
import {
  decide,
  exitCode,
  learnerStack,
  mergeShards,
  reasonBeyondTests,
  skipReason,
  type Verdict,
} from "../src/check/verdict.ts";
import { ROOT } from "../src/paths.ts";
import { encode, parseReply } from "../src/redis/raw.ts";
import { forgetSecrets, hideSecrets, redact, rememberSecretsOf } from "../src/redis/redact.ts";
import {
  fromConnectionString,
  RedisUrlError,
  redisUrlFrom,
  versionAtLeast,
} from "../src/redis/target.ts";
import { learnerCommands, parseMonitorLine, parseQuotedArgs } from "../src/redis/trace.ts";
import { isModuleName } from "../src/workspace.ts";

describe("redact", () => {
  test("hides passwords and tokens in redis URLs, keeping user and host", () => {
    expect(redact("rediss://default:k3y=@cache.redis.cache.windows.net:6380")).toBe(
      "rediss://default:***@cache.redis.cache.windows.net:6380",
    );
    expect(redact("failed: redis://:pw@127.0.0.1:6379 and redis://u:t@h:1")).toBe(
      "failed: redis://:***@127.0.0.1:6379 and redis://u:***@h:1",
    );
    expect(redact("redis://127.0.0.1:6379")).toBe("redis://127.0.0.1:6379");
  });

  test("a password with an @ is hidden whole: it runs to the last @, as in a URL", () => {
    expect(redact("redis://user:wr@ngpw@host:6379 failed")).toBe(
      "redis://user:***@host:6379 failed",
    );
    expect(redact('{"a":"redis://:p@h:1","b":"x@y"}')).toBe('{"a":"redis://:***@h:1","b":"x@y"}');
  });

  test("once known, a password, a token and an object id are hidden wherever they appear", () => {
    const id = "0b7a4c1e-5d2f-4e8a-9c3b-1f6d8e2a7b90";
    rememberSecretsOf(`rediss://${id}:tok%2Fen%22x@host:10000`);
    try {
      expect(redact('password: tok/en"x, user 0B7A')).toBe("password: ***, user 0B7A");
      expect(redact(JSON.stringify({ t: 'tok/en"x' }))).toBe('{"t":"***"}');
      expect(redact(`hello ${id}, tok%2Fen%22x`)).toBe("hello ***, ***");
      expect(redact("user default")).toBe("user default");
    } finally {
      forgetSecrets();
    }
  });

  test("everything printed hides known secrets only: example URLs in lesson texts stay", () => {
    rememberSecretsOf("redis://:k3y-value@host:6379");
    try {
      expect(hideSecrets("rediss://user:password@host:port, k3y-value")).toBe(
        "rediss://user:password@host:port, ***",
      );
    } finally {
      forgetSecrets();
    }
  });

  test("the connection string's password option is hidden without knowing it", () => {
    expect(redact("h:6380,password=abc=,ssl=True")).toBe("h:6380,password=***,ssl=True");
  });
});

describe("REDIS_URL", () => {
  test("the Azure portal's connection string becomes the equivalent URL", () => {
    expect(
      fromConnectionString(
        "c.redis.cache.windows.net:6380,password=k3y/+=,ssl=True,abortConnect=False",
      ),
    ).toBe("rediss://:k3y%2F%2B%3D@c.redis.cache.windows.net:6380");
    expect(fromConnectionString("h,ssl=false")).toBe("redis://h:6379");
    expect(fromConnectionString("h,ssl=True,user=u,password=p")).toBe("rediss://u:p@h:6380");
    expect(fromConnectionString("not a url")).toBeUndefined();
    forgetSecrets();
  });

  test("what cannot be used is refused without repeating it", () => {
    for (const bad of ["h1:6380,h2:6380,password=S3cret", "S3cret", "http://:S3cret@h"]) {
      expect(() => redisUrlFrom(bad)).toThrow(RedisUrlError);
      try {
        redisUrlFrom(bad);
      } catch (error) {
        expect((error as Error).message).not.toContain("S3cret");
      }
    }
    expect(redisUrlFrom(" redis://h:1 ")).toBe("redis://h:1");
  });
});

describe("MONITOR parsing", () => {
  test("splits quoted arguments with escapes", () => {
    expect(parseQuotedArgs('"SET" "a\\"b" "x\\ny" "\\x41"')).toEqual(["SET", 'a"b', "x\ny", "A"]);
  });

  test("reads time, address and arguments of a line", () => {
    expect(parseMonitorLine('1700000000.500000 [0 127.0.0.1:5000] "PING"')).toEqual({
      time: 1700000000500,
      addr: "127.0.0.1:5000",
      args: ["PING"],
    });
    expect(parseMonitorLine("OK")).toBeUndefined();
  });

  test("keeps the learner's commands and names their connections", () => {
    const at = 0;
    const sent = learnerCommands([
      { at, addr: "a:1", args: ["HELLO", "3", "SETNAME", "wb:check:main:1"] },
      { at, addr: "a:1", args: ["CLIENT", "LIST"] },
      { at, addr: "b:2", args: ["HELLO", "3", "SETNAME", "wb:learner:1:api"] },
      { at, addr: "b:2", args: ["CLIENT", "SETINFO", "LIB-NAME", "node-redis"] },
      { at, addr: "b:2", args: ["PUBLISH", "ch", "{}"] },
      { at, addr: "c:3", args: ["PING"] },
      // The client a check hands to the learner: its handshake is the check's, its commands not.
      { at, addr: "d:4", args: ["HELLO", "3", "SETNAME", "wb:learner:1a2b"] },
      { at, addr: "d:4", args: ["XADD", "s", "*", "a", "1"] },
      { at, addr: "lua", args: ["SET", "k", "v"] },
    ]);
    expect(sent.map((c) => [c.client, c.args[0]])).toEqual([
      ["wb:learner:1:api", "HELLO"],
      ["wb:learner:1:api", "PUBLISH"],
      [undefined, "PING"],
      ["wb:learner:1a2b", "XADD"],
      ["lua script", "SET"],
    ]);
  });
});

describe("RESP", () => {
  test("encodes commands and parses every reply type, also when split", () => {
    expect(encode(["GET", "ké"])).toBe("*2\r\n$3\r\nGET\r\n$3\r\nké\r\n");
    const reply = Buffer.from("*4\r\n+OK\r\n:7\r\n$-1\r\n$5\r\nhello\r\n");
    expect(parseReply(reply)?.reply).toEqual(["OK", 7, null, "hello"]);
    expect(parseReply(reply.subarray(0, 12))).toBeUndefined();
    expect(parseReply(Buffer.from("-ERR nope\r\n"))?.reply).toEqual(new Error("ERR nope"));
  });
});

describe("arguments", () => {
  test("reads command, lesson, flags and options", () => {
    const args = parseArgs(["check", "02", "--json", "--variant=styled", "--mistake", "no-xack"]);
    expect(args.command).toBe("check");
    expect(args.lesson).toBe("02");
    expect([...args.flags]).toEqual(["--json"]);
    expect(args.options.get("--variant")).toBe("styled");
    expect(args.options.get("--mistake")).toBe("no-xack");
    expect(parseArgs(["hint", "--level=2"]).options.get("--level")).toBe("2");
    expect(parseArgs([]).command).toBe("start");
  });

  test("rejects a second lesson and an option without its value", () => {
    expect(() => parseArgs(["check", "01", "02"])).toThrow(UsageError);
    expect(() => parseArgs(["chekc", "01"])).toThrow(
      'Unknown command "chekc": did you mean check?',
    );
    expect(() => parseArgs(["hint", "01", "--level"])).toThrow(/needs a value/);
    expect(() => parseArgs(["check", "--mistake", "--json"])).toThrow(/--mistake needs a value/);
    expect(() => parseArgs(["check", "--json=yes"])).toThrow(/--json takes no value/);
  });

  test("refuses an option its command does not know, naming the nearest one", () => {
    expect(() => parseArgs(["check", "08", "--soluton", "--json"])).toThrow(
      "Unknown option --soluton: did you mean --solution?",
    );
    expect(() => parseArgs(["hint", "02", "--levle", "2"])).toThrow("did you mean --level?");
    // An option of another command is unknown here too.
    expect(() => parseArgs(["list", "--verbose"])).toThrow("list knows --json, --help.");
    expect(() => parseArgs(["demo", "02", "-x"])).toThrow("Unknown option -x: demo knows --help.");
  });

  test("refuses an empty lesson, a lesson where none is taken, and none where one is needed", () => {
    expect(() => parseArgs(["check", ""])).toThrow("The lesson is empty");
    expect(() => parseArgs(["check", "  "])).toThrow("The lesson is empty");
    expect(() => parseArgs(["doctor", "02"])).toThrow("takes no lesson");
    expect(() => parseArgs(["demo"])).toThrow("needs a lesson");
  });

  test("--help asks for the command's own usage, whatever else is given", () => {
    expect(parseArgs(["check", "08", "--help"]).flags.has("--help")).toBe(true);
    expect(parseArgs(["solution", "-h"]).flags.has("--help")).toBe(true);
    expect(commandUsage("solution")).toMatch(/^Usage: npm run solution -- \[lesson\] \[options\]/);
    expect(commandUsage("solution")).not.toContain("npm run check");
    expect(helpPointer("check")).toBe("Run `npm run check -- --help` for its usage.");
  });
});

describe("versions and skipping", () => {
  const lesson = { number: "05", minRedis: "6.2" } as Lesson;

  test("compares dotted versions", () => {
    expect(versionAtLeast("7.0.15", "6.2")).toBe(true);
    expect(versionAtLeast("6.2.0", "6.2")).toBe(true);
    expect(versionAtLeast("6.0.9", "6.2")).toBe(false);
    expect(versionAtLeast("10.0.0", "8.2")).toBe(true);
  });

  test("skips a lesson that needs the private server or a newer Redis, saying why", () => {
    expect(skipReason(lesson, { kind: "private", version: "7.0.15" })).toBeUndefined();
    expect(skipReason(lesson, { kind: "private", version: "6.0.0" })).toMatch(/needs Redis 6.2/);
    const global = { ...lesson, needsPrivateServer: "it uses CONFIG SET" };
    expect(skipReason(global, { kind: "external", version: "7.2.0" })).toMatch(
      /private server: it uses CONFIG SET.*Unset REDIS_URL/,
    );
  });
});

describe("deciding a verdict", () => {
  const ended = { exitCode: 0, signal: null };
  const result = (test: string, state: "passed" | "failed", message?: string) => ({
    event: "result" as const,
    test,
    state,
    errors: message ? [{ name: "CheckFailure", message }] : [],
  });

  test("passes when every test passed, and maps verdicts to exit codes", () => {
    const verdict = decide(
      [{ event: "start", test: "a" }, result("a", "passed"), { event: "end" }],
      ended,
    );
    expect(verdict.status).toBe("passed");
    expect(exitCode(verdict)).toBe(0);
    expect(exitCode({ status: "failed" })).toBe(1);
    expect(exitCode({ status: "error" })).toBe(2);
    expect(exitCode({ status: "skipped" })).toBe(2);
  });

  test("fails with the learner's message", () => {
    const verdict = decide([result("a", "failed", "Expected 3, got 1."), { event: "end" }], ended);
    expect(verdict.status).toBe("failed");
    expect(verdict.tests[0]?.message).toBe("Expected 3, got 1.");
  });

  test("names the test that was running when time ran out", () => {
    const verdict = decide(
      [
        { event: "start", test: "a" },
        { event: "start", test: "b" },
      ],
      { ...ended, timedOutAfterMs: 5000 },
    );
    expect(verdict.status).toBe("failed");
    expect(verdict.reason).toMatch(/within 5s.*"b"/);
  });

  test("treats a run with no tests, or no report, as our error rather than the learner's", () => {
    expect(decide([{ event: "end" }], ended).status).toBe("error");
    expect(decide([], { exitCode: 1, signal: null }).status).toBe("error");
  });

  test("keeps the learner's stack frames, not the kit's, and not the message twice", () => {
    const learner =
      "Error: boom\n    at connect (workspace/01/connect.ts:3:9)\n    at run (x.ts:1:1)";
    expect(learnerStack(learner)).toBe(
      "at connect (workspace/01/connect.ts:3:9)\nat run (x.ts:1:1)",
    );
    expect(learnerStack("CheckFailure: no\n    at fail (/r/checks/kit.ts:53:9)")).toBeUndefined();
    expect(learnerStack(undefined)).toBeUndefined();
  });

  test("says an error raised outside any test was a rejection of the learner's, where and in which test", () => {
    const file = join(ROOT, "workspace/05/leases.ts");
    const rejected = {
      event: "error" as const,
      name: "Error",
      message: "onExpired() threw on purpose.",
      stack: `Error: onExpired() threw on purpose.\n    at listener (${file}:72:7)`,
      type: "Unhandled Rejection",
      test: "a watcher whose onExpired throws",
    };
    const verdict = decide([result("a", "passed"), rejected, { event: "end" }], ended, file);
    expect(verdict.status).toBe("failed");
    expect(verdict.reason).toMatch(/^A promise of your code was rejected and nothing handled it/);
    expect(verdict.reason).toMatch(/at workspace\/05\/leases\.ts:72\b.*broke "a watcher whose/);
    expect(verdict.reason).toMatch(/Await the call .* or handle its rejection/);
    // A rejection of a node-redis call the learner did not await: no frame of theirs.
    const dropped = { ...rejected, message: "Socket closed unexpectedly", stack: undefined };
    const drop = decide([result("a", "passed"), dropped, { event: "end" }], ended, file);
    expect(drop.reason).toMatch(
      /nothing handled it: Error: Socket closed unexpectedly\. .*nobody awaited/,
    );
    // Any other error outside a test is told as before.
    const plain = { ...rejected, type: undefined };
    expect(decide([plain, { event: "end" }], ended).reason).toBe(
      "Error: onExpired() threw on purpose.",
    );
  });

  test("blames process.exit on the learner's code", () => {
    const verdict = decide(
      [
        { event: "start", test: "a" },
        { event: "error", name: "Error", message: 'process.exit unexpectedly called with "1"' },
        { event: "end" },
      ],
      ended,
    );
    expect(verdict.status).toBe("failed");
    expect(verdict.reason).toMatch(/process\.exit\(\) during "a"/);
  });
});

describe("merging what the processes sharing a check reported", () => {
  type Part = Parameters<typeof mergeShards>[0][number];
  const ran = (name: string, status: "passed" | "failed" = "passed") => ({
    name,
    status,
    message: status === "failed" ? `${name} went wrong` : undefined,
  });
  const elsewhere = (name: string) => ({
    name,
    status: "skipped" as const,
    message: CLAIMED_ELSEWHERE,
  });
  const part = (tests: Part["tests"], rest: Partial<Part> = {}): Part => {
    const failed = tests.filter((t) => t.status === "failed").length;
    return {
      status: failed > 0 ? "failed" : "passed",
      reason: failed > 0 ? `${failed} of ${tests.length} checks failed.` : undefined,
      tests,
      output: [],
      ...rest,
    };
  };

  test("keeps each test once, from the process that ran it, in the check's order", () => {
    const merged = mergeShards([
      part([ran("a"), elsewhere("b"), ran("c", "failed"), elsewhere("d")]),
      part([elsewhere("a"), ran("b"), elsewhere("c"), ran("d")]),
    ]);
    expect(merged.tests.map((t) => [t.name, t.status])).toEqual([
      ["a", "passed"],
      ["b", "passed"],
      ["c", "failed"],
      ["d", "passed"],
    ]);
    expect(merged.status).toBe("failed");
    expect(merged.reason).toBe("1 of 4 checks failed.");
  });

  test("passes only when every process passed, and a real skip stays a skip", () => {
    const skipped = { name: "needs the private server", status: "skipped" as const, message: "x" };
    const merged = mergeShards([part([ran("a"), skipped]), part([elsewhere("a"), skipped])]);
    expect(merged.status).toBe("passed");
    expect(merged.tests).toEqual([ran("a"), skipped]);
  });

  test("a process that failed as a whole gives the run its reason", () => {
    const stuck = 'The check did not finish within 60s: it was still waiting on "b".';
    const merged = mergeShards([
      part([ran("a"), elsewhere("b"), ran("c")]),
      part([elsewhere("a"), ran("b", "failed")], { status: "failed", reason: stuck }),
    ]);
    expect(merged.status).toBe("failed");
    expect(merged.reason).toBe(stuck);
    expect(merged.tests.map((t) => t.name)).toEqual(["a", "b", "c"]);
  });

  test("a test that never finished does not say the tests after it did not run when others ran them", () => {
    const timedOut = decide([{ event: "start", test: "b" }], {
      timedOutAfterMs: 60_000,
      exitCode: null,
      signal: null,
    });
    expect(timedOut.tests.at(-1)?.message).toContain("the tests after it did not run");
    const others = part([elsewhere("a"), elsewhere("b"), ran("c")]);
    const merged = mergeShards([{ ...timedOut, tests: [ran("a"), ...timedOut.tests] }, others]);
    expect(merged.tests.map((t) => t.name)).toEqual(["a", "b", "c"]);
    expect(merged.tests[1]?.message).not.toContain("the tests after it did not run");
    expect(merged.tests[1]?.message).toContain("ran in the check's other processes");
    // Last in the list: nothing after it ran anywhere, and the words say so.
    const last = mergeShards([timedOut, part([elsewhere("b")])]);
    expect(last.tests.at(-1)?.message).toContain("the tests after it did not run");
  });

  test("processes cut off by the limit, each stuck in a test: the reason names every stuck test", () => {
    const stuckIn = (name: string) =>
      decide([{ event: "start", test: name }], {
        timedOutAfterMs: 15_000,
        exitCode: null,
        signal: null,
      });
    const first = stuckIn("b");
    const second = stuckIn("d");
    const merged = mergeShards(
      [
        { ...first, tests: [ran("a"), ...first.tests] },
        { ...second, tests: [elsewhere("a"), elsewhere("b"), ran("c"), ...second.tests] },
      ],
      15_000,
    );
    expect(merged.status).toBe("failed");
    expect(merged.reason).toMatch(
      /^The check did not finish within 15s: it was still waiting on "b" and "d" \(each in a process of its own\)\./,
    );
    // One stuck process: its reason as it was.
    const one = mergeShards(
      [{ ...first, tests: [ran("a"), ...first.tests] }, part([ran("c")])],
      15_000,
    );
    expect(one.reason).toBe(first.reason);
  });

  test("a test no process ran is left out, not shown as skipped", () => {
    const merged = mergeShards([part([ran("a"), elsewhere("b")]), part([elsewhere("a")])]);
    expect(merged.tests.map((t) => t.name)).toEqual(["a"]);
  });
});

describe("dividing a check's tests among its processes", () => {
  const dir = () => mkdtempSync(join(tmpdir(), "workbook-claims-"));
  const settled = async (p: Promise<unknown>) =>
    Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 60))]);

  test("a test goes to the first process that claims it", () => {
    const shared = dir();
    expect(claim(shared, "t1")).toBe(true);
    expect(claim(shared, "t1")).toBe(false);
    expect(claim(shared, "t2")).toBe(true);
    rmSync(shared, { recursive: true });
  });

  test("a test that runs alone waits for the others' tests, and they wait for it", async () => {
    const shared = dir();
    const leaveShared = await enterShared(shared, "1");
    const alone = enterAlone(shared, "0");
    expect(await settled(alone)).toBe(false);
    leaveShared();
    const leaveAlone = await alone;
    const next = enterShared(shared, "1");
    expect(await settled(next)).toBe(false);
    leaveAlone();
    (await next)();
    rmSync(shared, { recursive: true });
  });
});

test("reads tsc diagnostics, including continuation lines", () => {
  const output = [
    "workspace/x.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.",
    "  The expected type comes from here.",
    "Found 1 error.",
  ].join("\n");
  expect(parseTscOutput(output)).toEqual([
    {
      file: "workspace/x.ts",
      line: 3,
      column: 7,
      message:
        "TS2322: Type 'string' is not assignable to type 'number'.\n  The expected type comes from here.",
    },
  ]);
});

describe("mistakes stored as diffs", () => {
  const solution = "a\nb\nc\nd\ne\nf\ng\n";
  const diff = [
    "# mistake: drops c",
    "--- solution",
    "+++ mistake",
    "@@ -2,3 +2,2 @@",
    " b",
    "-c",
    " d",
    "@@ -6,2 +5,3 @@",
    " f",
    "+x",
    " g",
  ].join("\n");

  test("apply to the solution, hunk by hunk", () => {
    expect(applyPatch(solution, diff)).toBe("a\nb\nd\ne\nf\nx\ng\n");
  });

  test("refuse to apply when the solution has changed under them", () => {
    expect(() => applyPatch(solution.replace("c", "C"), diff)).toThrow(/no longer matches/);
    expect(() => applyPatch(solution, "# nothing")).toThrow(/no hunks/);
  });

  test("carry their description and expected message in # lines", () => {
    expect(parseMistakeHeader("# mistake: Forgets XACK.\n# expect: still pending\n---")).toEqual({
      description: "Forgets XACK.",
      expect: "still pending",
    });
  });
});

describe("rendering a verdict", () => {
  const verdict: Verdict = {
    lesson: "08-consumer-groups",
    title: "Consumer groups share the work",
    target: "learner",
    file: "workspace/08-consumer-groups/workers.ts",
    status: "failed",
    reason: "1 of 1 checks failed.",
    tests: [
      { name: "each task once", status: "failed", message: "3 tasks still pending.", hint: 2 },
    ],
    output: [],
    sent: [{ at: 0, addr: "a:1", client: "wb:learner:1a2b", args: ["XREADGROUP", "GROUP", "g"] }],
    durationMs: 1,
  };

  test("points at the hint as a command, or as a key in the runner", () => {
    expect(renderVerdict(verdict)).toContain("Hint 2: npm run hint -- 08 --level 2");
    expect(renderVerdict(verdict, { hints: "keys" })).toContain("Hint 2: press 2");
  });

  test("shows what the code sent, and the next step unless told not to", () => {
    const text = renderVerdict(verdict);
    expect(text).toContain("What your code sent to Redis (1 command):");
    expect(text).toMatch(/your client\s+XREADGROUP GROUP g/);
    expect(text).toMatch(/Next: edit .*npm run check -- 08/);
    expect(renderVerdict(verdict, { next: false })).not.toContain("Next:");
  });

  test("says why a run failed as a whole even when a test failed too", () => {
    const counted = renderVerdict(verdict);
    expect(counted).not.toContain("1 of 1 checks failed.");
    const escaped = "A promise your code started was rejected and nothing caught it: read it.";
    const text = renderVerdict({ ...verdict, reason: escaped });
    expect(text).toContain(escaped);
    expect(text).toContain("3 tasks still pending.");
    const hung = decide(
      [
        { event: "start", test: "a" },
        {
          event: "result",
          test: "a",
          state: "failed",
          errors: [{ name: "CheckFailure", message: "a failed" }],
        },
        { event: "start", test: "b" },
      ],
      { timedOutAfterMs: 60_000, exitCode: null, signal: "SIGKILL" },
    );
    // The stuck test says what the run's reason would: told once.
    expect(reasonBeyondTests(hung)).toBeUndefined();
    expect(hung.tests.map((t) => t.name)).toEqual(["a", "b"]);
  });
});

test("modules beside an exercise count as its sources; editor and reset copies do not", () => {
  for (const name of ["broadcast.ts", "helpers.ts", "util.mts", "legacy.js"]) {
    expect(isModuleName(name), name).toBe(true);
  }
  for (const name of [
    "broadcast.ts.bak",
    "broadcast.ts.bak.1",
    ".broadcast.ts.swp",
    "#broadcast.ts#",
    "broadcast.ts~",
    "notes.md",
  ]) {
    expect(isModuleName(name), name).toBe(false);
  }
});
