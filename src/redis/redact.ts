/**
 * Passwords are never printed. A pattern alone cannot promise that: learner code may log the
 * password on its own, a check message may quote it. So the secrets of the Redis URL in use are
 * remembered here, and redact() replaces them by value wherever they appear; the patterns are
 * the fallback for a URL whose secrets were never remembered.
 */
const secrets = new Set<string>();

/** A Microsoft Entra object id, which Azure Managed Redis uses as the user name. */
const OBJECT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** `rediss://user:pass@host`: the password runs to the last @ of the URL, as in WHATWG URL. */
const URL_PASSWORD = /(rediss?:\/\/)([^:@/\s"'<>]*):([^\s"'<>]*)@/gi;
/** The Azure portal's connection string: `host:6380,password=...,ssl=True`. */
const PASSWORD_OPTION = /(\bpassword=)[^,;\s"'<>]+/gi;

function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Remembers one secret in every spelling a program may print: raw, URL-encoded, JSON-escaped. */
export function rememberSecret(value: string | undefined): void {
  if (!value) return;
  const plain = decoded(value);
  for (const form of [
    value,
    plain,
    encodeURIComponent(plain),
    JSON.stringify(plain).slice(1, -1),
  ]) {
    if (form) secrets.add(form);
  }
}

/**
 * Remembers the secrets of a redis:// URL: the password (an access key, or an Entra token) and
 * the user name when it is an object id. A text that is no URL is left to the patterns.
 */
export function rememberSecretsOf(url: string | undefined): void {
  if (!url) return;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return;
  }
  rememberSecret(parsed.password);
  if (OBJECT_ID.test(decoded(parsed.username))) rememberSecret(parsed.username);
}

/** Forgets every remembered secret (for tests). */
export function forgetSecrets(): void {
  secrets.clear();
}

/**
 * The text with every remembered secret replaced by ***. Nothing else changes, so it suits any
 * output, lesson texts and code with example URLs included.
 */
export function hideSecrets(text: string): string {
  let result = text;
  // Longest first, so a secret that contains another is replaced whole.
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
    result = result.split(secret).join("***");
  }
  return result;
}

/** hideSecrets(), and any password in a Redis URL or connection string: for messages and logs. */
export function redact(text: string): string {
  return hideSecrets(text).replace(URL_PASSWORD, "$1$2:***@").replace(PASSWORD_OPTION, "$1***");
}

/** A value as JSON with every secret hidden: for --json output and files. */
export function redactedJson(value: unknown): string {
  return redact(JSON.stringify(value));
}
