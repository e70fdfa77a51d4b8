import type { Redis } from "../kit.ts";

/** What a failed connection to the TLS server tells about the learner's client options. */
export function explainConnectError(error: Error, client: Redis, servername: string): string {
  const said = `("${error.message}")`;
  if (/altnames|does not match certificate/i.test(error.message)) {
    return `The server's certificate is issued for ${servername}, and your client checked it against the address it connected to ${said}. Pass servername: conn.servername in the socket options: it is the name the certificate must carry when the address differs (a private endpoint, an IP).`;
  }
  if (/self[- ]signed|unable to (get|verify)|local issuer|certificate/i.test(error.message)) {
    return `Your client did not trust the server's certificate ${said}: it is signed by the CA in conn.ca, which is not in the system's store. Pass ca: conn.ca in the socket options.`;
  }
  if (/NOAUTH/.test(error.message)) {
    return `Your client logged in without a password ${said}. A user name in a rediss:// URL replaces your credentialsProvider with one of its own, which has no password: leave the user out of the URL and let the provider return both.`;
  }
  if (/WRONGPASS|invalid username|NOPERM/i.test(error.message)) {
    return `The server refused your client's login ${said}: authenticate as conn.username with the password conn.password() returns.`;
  }
  const tls = (client.options?.socket as { tls?: unknown } | undefined)?.tls;
  if (tls !== true) {
    return `Your client connected without TLS ${said}: this port, like Azure's 6380 and 10000, only speaks TLS. Set socket.tls: true (or use a rediss:// URL).`;
  }
  return `Your client could not connect to the TLS server ${said}.`;
}
