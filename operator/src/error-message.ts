// The message of anything thrown, for logs, events and status conditions: an Error's message, else
// the value as a string (a library may throw a string or a plain object).
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
