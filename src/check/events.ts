/** What the check's vitest reporter writes, one JSON object per line, for the harness to read. */
export type CheckEvent =
  | { event: "start"; test: string }
  | {
      event: "result";
      test: string;
      state: "passed" | "failed" | "skipped";
      /** Why a test was skipped. */
      note?: string;
      errors: { name: string; message: string; stack?: string }[];
    }
  | { event: "log"; text: string }
  | { event: "error"; name: string; message: string; stack?: string }
  | { event: "end" }
  /** A process group the check started (a learner's worker): the harness makes sure it ends. */
  | { event: "process"; pid: number };
