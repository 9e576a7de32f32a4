// What every logged-in page reads: the session (with quota and usage), a
// way to refresh it after an action, and a one-shot message for the next
// page (a delete navigates away, and the dashboard says it happened).

import { createContext } from 'preact'
import { useContext } from 'preact/hooks'
import type { Session } from './types.ts'

export interface AppState {
  session: Session
  /** Reads the session again (quota use changes after every action). */
  refreshSession: () => Promise<void>
  /** A sentence for the next page to show. */
  flash: (message: string) => void
}

export const AppContext = createContext<AppState | null>(null)

export function useApp(): AppState {
  const app = useContext(AppContext)
  if (app === null) throw new Error('useApp() outside the logged-in app.')
  return app
}

let pendingFlash: string | null = null

export function setFlash(message: string): void {
  pendingFlash = message
}

/** The message left by the previous page, once. */
export function takeFlash(): string | null {
  const message = pendingFlash
  pendingFlash = null
  return message
}
