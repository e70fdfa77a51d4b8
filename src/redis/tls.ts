/**
 * TLS for a rediss:// REDIS_URL, the same for every connection the workbook makes (doctor,
 * checks, pipeline, redis-cli): the system's CAs, plus the one in the PEM file REDIS_CA for a
 * server whose certificate a private CA signed; REDIS_TLS_SERVERNAME is the certificate's name
 * when it differs from the URL's host (an IP, a private endpoint, a tunnel). Verification is
 * never turned off.
 */
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";

export class TlsSettingsError extends Error {
  override name = "TlsSettingsError";
}

export interface TlsSocketOptions {
  tls: true;
  ca?: string[];
  servername?: string;
}

/** The CA file and server name from the environment, checked; undefined for a redis:// URL. */
export function tlsSettings(
  url: string,
  env: NodeJS.ProcessEnv = process.env,
): { caFile?: string; servername?: string } | undefined {
  if (!/^rediss:/i.test(url)) return undefined;
  const caFile = env.REDIS_CA?.trim() || undefined;
  const servername = env.REDIS_TLS_SERVERNAME?.trim() || undefined;
  return { caFile, servername };
}

/**
 * Socket options to spread into createClient's `socket` for `url`: empty for redis://; for
 * rediss:// TLS on, and REDIS_CA / REDIS_TLS_SERVERNAME applied. Throws TlsSettingsError when
 * REDIS_CA cannot be read.
 */
export function tlsSocketOptions(
  url: string,
  env: NodeJS.ProcessEnv = process.env,
): TlsSocketOptions | Record<string, never> {
  const settings = tlsSettings(url, env);
  if (!settings) return {};
  const options: TlsSocketOptions = { tls: true };
  if (settings.caFile) {
    let pem: string;
    try {
      pem = readFileSync(settings.caFile, "utf8");
    } catch (error) {
      throw new TlsSettingsError(
        `REDIS_CA=${settings.caFile} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): it must name a PEM file with the CA that signed the server's certificate.`,
      );
    }
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new TlsSettingsError(
        `REDIS_CA=${settings.caFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----).`,
      );
    }
    // `ca` replaces Node's trusted CAs: keep them, so a public certificate still verifies.
    options.ca = [...rootCertificates, pem];
  }
  if (settings.servername) options.servername = settings.servername;
  return options;
}
