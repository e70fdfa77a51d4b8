/** `npm run pipeline` arguments: one strict table, with the nearest option for a typo. */
import { expect, test } from "vitest";
import { PIPELINE_USAGE, parsePipelineArgs } from "../src/pipeline/args.ts";

test("--python-workers is a whole number from 0, default 0", () => {
  expect(parsePipelineArgs([]).pythonWorkers).toBe(0);
  expect(parsePipelineArgs(["--python-workers", "3"]).pythonWorkers).toBe(3);
  expect(parsePipelineArgs(["--python-workers=0"]).pythonWorkers).toBe(0);
  expect(() => parsePipelineArgs(["--python-workers", "-1"])).toThrow(
    "--python-workers must be between 0 and 32 (got -1).",
  );
  expect(() => parsePipelineArgs(["--python-workers", "1.5"])).toThrow("whole number");
  expect(PIPELINE_USAGE).toContain("--python-workers N");
});

test("a typo names the nearest option; a flag with a value and a stray word are refused", () => {
  expect(() => parsePipelineArgs(["--workrs", "4"])).toThrow(
    "Unknown option --workrs: did you mean --workers?",
  );
  expect(() => parsePipelineArgs(["--chaos=yes"])).toThrow("--chaos takes no value.");
  expect(() => parsePipelineArgs(["100"])).toThrow("Unexpected argument: 100");
  expect(() => parsePipelineArgs(["--parts"])).toThrow("--parts needs a file name.");
  expect(() => parsePipelineArgs(["--latency", "--chaos"])).toThrow(
    "--latency needs a number (got --chaos).",
  );
});

test("--redis-url takes a URL, --tls a local TLS server; the two exclude each other", () => {
  expect(parsePipelineArgs([]).redisUrl).toBeUndefined();
  expect(parsePipelineArgs([]).tls).toBe(false);
  expect(parsePipelineArgs(["--redis-url", "rediss://:pw@host:6380"]).redisUrl).toBe(
    "rediss://:pw@host:6380",
  );
  expect(parsePipelineArgs(["--tls"]).tls).toBe(true);
  expect(() => parsePipelineArgs(["--redis-url"])).toThrow("--redis-url needs a URL");
  expect(() => parsePipelineArgs(["--redis-url", " "])).toThrow("--redis-url needs a URL");
  expect(() => parsePipelineArgs(["--tls", "--redis-url", "rediss://h:6380"])).toThrow(
    "--tls starts a local TLS server",
  );
  expect(PIPELINE_USAGE).toContain("--redis-url URL");
  expect(PIPELINE_USAGE).toContain("--tls");
});
