/** The batched pipeline's options: batched by default, lesson 13's file one at a time. */
import { expect, test } from "vitest";
import { PIPELINE_USAGE, parsePipelineArgs } from "../../src/pipeline/args.ts";

test("--batch, --in-flight, --bulk and --max-backlog are whole numbers; --parts and batches exclude each other", () => {
  expect(parsePipelineArgs([]).batch).toBeUndefined();
  expect(
    parsePipelineArgs(["--batch", "50", "--in-flight", "8", "--bulk", "20", "--max-backlog", "0"]),
  ).toMatchObject({ batch: 50, inFlight: 8, bulk: 20, maxBacklog: 0 });
  expect(() => parsePipelineArgs(["--batch", "0"])).toThrow("--batch must be between 1 and 1000");
  expect(() => parsePipelineArgs(["--bulk", "501"])).toThrow("--bulk must be between 1 and 500");
  expect(parsePipelineArgs(["--parts", "x.ts", "--batch", "1"]).parts).toBe("x.ts");
  expect(() => parsePipelineArgs(["--parts", "x.ts", "--batch", "10"])).toThrow(
    "--parts runs lesson 13's one-at-a-time loop",
  );
  expect(() => parsePipelineArgs(["--parts", "x.ts", "--batch-parts", "y.ts"])).toThrow(
    "exclude each other",
  );
  expect(() => parsePipelineArgs(["--batch-parts"])).toThrow("--batch-parts needs a file name.");
  for (const option of ["--batch N", "--in-flight N", "--bulk N", "--max-backlog N"]) {
    expect(PIPELINE_USAGE).toContain(option);
  }
});
