/**
 * What every command writes goes through here: known secrets are hidden whatever printed them
 * (our messages, a learner's console.log, a stack trace; example URLs in lesson texts stay as
 * written), and a reader that goes away
 * (`npm run solution -- 03 | head`) ends the command quietly instead of with an EPIPE trace.
 */
import { hideSecrets } from "./redis/redact.ts";

type Write = typeof process.stdout.write;

function redacting(stream: NodeJS.WriteStream): void {
  const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  stream.write = ((chunk: unknown, ...rest: unknown[]) =>
    write(
      typeof chunk === "string"
        ? hideSecrets(chunk)
        : Buffer.isBuffer(chunk)
          ? hideSecrets(chunk.toString("utf8"))
          : chunk,
      ...rest,
    )) as Write;
}

/** Installs the redaction on stdout and stderr; `onClosed` runs once when a reader has gone. */
export function guardOutput(onClosed: () => void): void {
  let closed = false;
  for (const stream of [process.stdout, process.stderr]) {
    redacting(stream);
    stream.on("error", (error: NodeJS.ErrnoException) => {
      // A closed terminal (EIO) is the hangup handler's (ui/exit.ts): throwing here would crash
      // the cleanup it runs.
      if (error.code !== "EPIPE") return;
      if (closed) return;
      closed = true;
      onClosed();
    });
  }
}
