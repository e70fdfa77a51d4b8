/**
 * A type checker that stays up between saves: TypeScript 7's API server holds the program (the
 * course's settings, node-redis and @types/node already parsed), so checking a saved file again
 * costs tens of milliseconds instead of a compiler start. While the server is still loading a
 * file's project, and for good once it failed, a one-off compiler run (./typecheck.ts) answers.
 */
import { readFileSync, rmSync } from "node:fs";
import { relative } from "node:path";
import type {
  API,
  DiagnosticCategory,
  Diagnostic as TsDiagnostic,
} from "typescript/unstable/async";
import { ROOT } from "../paths.ts";
import { sourcesBeside } from "../workspace.ts";
import { removeOnExit } from "./cleanup.ts";
import { configFor, type Diagnostic, typecheck } from "./typecheck.ts";

/** 1-based line and column of offset `pos` in `text`. */
function position(text: string, pos: number): { line: number; column: number } {
  const before = text.slice(0, pos).split("\n");
  return { line: before.length, column: (before.at(-1)?.length ?? 0) + 1 };
}

/** The message with its chain indented below it, as tsc prints it. */
function messageOf(d: TsDiagnostic, depth = 0): string {
  const own = depth === 0 ? `TS${d.code}: ${d.text}` : `${"  ".repeat(depth)}${d.text}`;
  return [own, ...(d.messageChain ?? []).map((m) => messageOf(m, depth + 1))].join("\n");
}

/**
 * What tsc would report for the file: its errors with a place (tsc's errors without a file are
 * not the learner's to fix, and ./typecheck.ts leaves them out too).
 */
function toDiagnostics(all: readonly TsDiagnostic[], error: DiagnosticCategory): Diagnostic[] {
  const texts = new Map<string, string>();
  const textOf = (file: string) => {
    if (!texts.has(file)) texts.set(file, readFileSync(file, "utf8"));
    return texts.get(file) ?? "";
  };
  return all.flatMap((d) => {
    if (d.category !== error || !d.fileName) return [];
    const { line, column } = position(textOf(d.fileName), d.pos);
    return [{ file: relative(ROOT, d.fileName), line, column, message: messageOf(d) }];
  });
}

interface Project {
  config: string;
  loaded: boolean;
  /** Resolves once the server has loaded it (false if it could not). */
  opened: Promise<boolean>;
  forget: () => boolean;
}

/** The API server, and the category its errors carry. */
interface Server {
  api: API;
  error: DiagnosticCategory;
}

export class WarmTypecheck {
  /** Loaded on first use: the API's code is not worth loading for commands that never check. */
  #server: Promise<Server> | undefined;
  readonly #projects = new Map<string, Project>();
  #broken = false;

  /** The file's compile errors, as typecheck(file) gives them. */
  async check(file: string): Promise<Diagnostic[]> {
    const project = this.#broken ? undefined : this.#ready(file);
    const server = this.#server;
    if (!project || !server) return typecheck(file);
    try {
      return await this.#diagnostics(await server, file, project.config);
    } catch {
      // An unstable API: whatever went wrong, the one-off compiler still gives the answer.
      this.#broken = true;
      await this.close();
      return typecheck(file);
    }
  }

  /** Loads `file`'s project now, so that its next check is warm; false if the server failed. */
  warmUp(file: string): Promise<boolean> {
    if (this.#broken) return Promise.resolve(false);
    const known = this.#projects.get(file);
    if (known) return known.opened;
    const config = configFor(file);
    this.#server ??= import("typescript/unstable/async").then((ts) => ({
      api: new ts.API({ cwd: ROOT }),
      error: ts.DiagnosticCategory.Error,
    }));
    const open = async ({ api }: Server) => {
      const snapshot = await api.updateSnapshot({ openProjects: [config] });
      await snapshot.dispose();
      project.loaded = true;
      return true;
    };
    const project: Project = {
      config,
      loaded: false,
      forget: removeOnExit(config),
      opened: this.#server.then(open).catch(() => {
        this.#broken = true;
        return false;
      }),
    };
    this.#projects.set(file, project);
    return project.opened;
  }

  /** The project for `file` once loaded; until then undefined, and the server is loading it. */
  #ready(file: string): Project | undefined {
    void this.warmUp(file);
    const project = this.#projects.get(file);
    return project?.loaded ? project : undefined;
  }

  async #diagnostics({ api, error }: Server, file: string, config: string): Promise<Diagnostic[]> {
    // The modules the learner split the exercise into may have changed too; the whole program's
    // diagnostics are the file's and theirs (library types are not checked: skipLibCheck), as
    // a one-off compiler run reports them.
    const changed = sourcesBeside(file);
    const snapshot = await api.updateSnapshot({ fileChanges: { changed } });
    try {
      const program = snapshot.getProject(config)?.program;
      if (!program) throw new Error(`The type checker lost the project of ${file}.`);
      return toDiagnostics(
        [
          ...(await program.getConfigFileParsingDiagnostics()),
          ...(await program.getProgramDiagnostics()),
          ...(await program.getSyntacticDiagnostics()),
          ...(await program.getSemanticDiagnostics()),
        ],
        error,
      );
    } finally {
      await snapshot.dispose();
    }
  }

  /** Stops the server and removes the project configs. */
  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const { config, forget } of this.#projects.values()) {
      rmSync(config, { force: true });
      forget();
    }
    this.#projects.clear();
    const started = await server?.catch(() => undefined);
    await started?.api.close().catch(() => {});
  }
}
