import { connect, type Socket } from "node:net";

/**
 * A minimal RESP2 connection for the harness itself: readiness probes and MONITOR. The
 * harness avoids node-redis here so that nothing it does shows up as one of "your" clients and
 * MONITOR's stream of lines can be read as it arrives.
 */
export type Reply = string | number | null | Error | Reply[];

export interface RawConnection {
  command(args: string[]): Promise<Reply>;
  /** Every reply that no command is waiting for (MONITOR lines). */
  onPush(listener: (reply: Reply) => void): void;
  close(): void;
  socket: Socket;
}

export function encode(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
}

/** Parses one reply at `offset`; returns undefined when the buffer does not hold it all yet. */
export function parseReply(buf: Buffer, offset = 0): { reply: Reply; end: number } | undefined {
  const lineEnd = buf.indexOf("\r\n", offset);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buf[offset] ?? 0);
  const line = buf.toString("utf8", offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case "+":
      return { reply: line, end: next };
    case "-":
      return { reply: new Error(line), end: next };
    case ":":
      return { reply: Number(line), end: next };
    case "$": {
      const length = Number(line);
      if (length < 0) return { reply: null, end: next };
      if (buf.length < next + length + 2) return undefined;
      return { reply: buf.toString("utf8", next, next + length), end: next + length + 2 };
    }
    case "*": {
      const count = Number(line);
      if (count < 0) return { reply: null, end: next };
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buf, at);
        if (!item) return undefined;
        items.push(item.reply);
        at = item.end;
      }
      return { reply: items, end: at };
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

export function connectRaw(host: string, port: number): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    const waiting: ((reply: Reply) => void)[] = [];
    const pushListeners: ((reply: Reply) => void)[] = [];
    let buffer = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      let parsed = parseReply(buffer);
      while (parsed) {
        const settle = waiting.shift();
        if (settle) settle(parsed.reply);
        else for (const listener of pushListeners) listener(parsed.reply);
        buffer = buffer.subarray(parsed.end);
        parsed = buffer.length > 0 ? parseReply(buffer) : undefined;
      }
    });
    const fail = (error: Error) => {
      for (const settle of waiting.splice(0)) settle(error);
    };
    socket.on("error", (error) => {
      reject(error);
      fail(error);
    });
    socket.on("close", () => fail(new Error("connection closed")));
    socket.once("connect", () => {
      socket.setNoDelay(true);
      resolve({
        socket,
        command: (args) =>
          new Promise((settle) => {
            waiting.push(settle);
            socket.write(encode(args));
          }),
        onPush: (listener) => pushListeners.push(listener),
        close: () => socket.destroy(),
      });
    });
  });
}
