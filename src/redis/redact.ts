/** Hides the password (and a token used as one) in every redis:// or rediss:// URL in the text. */
export function redact(text: string): string {
  return text.replace(/(rediss?:\/\/)([^:@/\s]*):([^@\s]+)@/gi, "$1$2:***@");
}
