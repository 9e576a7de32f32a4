// Shared pieces of the pages. An action's state (busy, done, failed) is
// kept by useAction and shown by <ActionStatus> right next to the control
// that started it, so a failure is read where the user is looking; errors
// use role="alert" (announced at once), progress and success role="status".

import type { ButtonHTMLAttributes, ComponentChildren } from 'preact'
import { useCallback, useEffect, useId, useRef, useState } from 'preact/hooks'
import { messageOf } from './api.ts'

// ------------------------------------------------------------------ actions

export interface ActionState {
  busy: boolean
  /** What is happening now, or what happened last (success). */
  message: string | null
  error: string | null
}

const idle: ActionState = { busy: false, message: null, error: null }

/**
 * Runs one kind of action at a time: `run(progress, work)` shows `progress`
 * while `work` runs, then the sentence `work` returned (if any) or the error.
 */
export function useAction(): [
  ActionState,
  (progress: string, work: () => Promise<unknown>) => Promise<boolean>,
  () => void,
] {
  const [state, setState] = useState<ActionState>(idle)
  const mounted = useRef(true)
  useEffect(
    () => () => {
      mounted.current = false
    },
    [],
  )
  const run = useCallback(async (progress: string, work: () => Promise<unknown>) => {
    setState({ busy: true, message: progress, error: null })
    try {
      const done = await work()
      if (mounted.current)
        setState({ busy: false, message: typeof done === 'string' ? done : null, error: null })
      return true
    } catch (error) {
      if (mounted.current) setState({ busy: false, message: null, error: messageOf(error) })
      return false
    }
  }, [])
  const clear = useCallback(() => setState(idle), [])
  return [state, run, clear]
}

export function ActionStatus({ state, class: className }: { state: ActionState; class?: string }) {
  // The live regions stay mounted (empty when idle) so screen readers announce changes.
  return (
    <div class={`action-status ${className ?? ''}`}>
      <p role="status" class={state.busy ? 'progress' : 'success'} hidden={state.message === null}>
        {state.busy ? <span class="spinner" aria-hidden="true" /> : null}
        {state.message}
      </p>
      <p role="alert" class="error" hidden={state.error === null}>
        {state.error}
      </p>
    </div>
  )
}

export function Notice({
  kind,
  children,
}: {
  kind: 'error' | 'info' | 'success'
  children: ComponentChildren
}) {
  return (
    <div class={`notice notice-${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      {children}
    </div>
  )
}

type ButtonProps = ButtonHTMLAttributes<HTMLButtonElement> & {
  busy?: boolean
  variant?: 'primary' | 'secondary' | 'danger' | 'quiet'
  type?: 'button' | 'submit'
  disabled?: boolean
}

export function Button({ busy, variant, type, disabled, children, ...rest }: ButtonProps) {
  return (
    <button
      {...rest}
      type={type ?? 'button'}
      class={`button button-${variant ?? 'secondary'} ${(rest.class as string | undefined) ?? ''}`}
      disabled={disabled === true || busy === true}
      aria-busy={busy === true ? 'true' : undefined}
    >
      {children}
    </button>
  )
}

/** A destructive button that asks once, in place: the confirm button takes the focus. */
export function ConfirmButton({
  label,
  context,
  question,
  confirmLabel,
  busy,
  onConfirm,
}: {
  label: string
  /** What the button acts on, for screen readers (the row or page shows it to the eye). */
  context?: string
  question: string
  confirmLabel: string
  busy?: boolean
  onConfirm: () => void
}) {
  const [asking, setAsking] = useState(false)
  const confirmRef = useRef<HTMLButtonElement>(null)
  const askRef = useRef<HTMLButtonElement>(null)
  const wasAsking = useRef(false)
  useEffect(() => {
    if (asking) confirmRef.current?.focus()
    else if (wasAsking.current) askRef.current?.focus()
    wasAsking.current = asking
  }, [asking])
  if (!asking)
    return (
      <Button variant="danger" busy={busy} onClick={() => setAsking(true)} ref={askRef}>
        {label}
        {context === undefined ? null : <span class="sr-only"> {context}</span>}
      </Button>
    )
  return (
    <span class="confirm">
      <span class="confirm-question">{question}</span>
      <Button
        variant="danger"
        ref={confirmRef}
        onClick={() => {
          setAsking(false)
          onConfirm()
        }}
      >
        {confirmLabel}
      </Button>
      <Button variant="quiet" onClick={() => setAsking(false)}>
        Cancel
      </Button>
    </span>
  )
}

// ------------------------------------------------------------------ forms

interface InputProps {
  label: string
  value: string
  onValue: (value: string) => void
  hint?: ComponentChildren
  error?: string | null
  type?: 'text' | 'password' | 'number'
  autocomplete?: string
  required?: boolean
  autoCapitalize?: 'none' | 'off'
  spellcheck?: boolean
  inputMode?: 'numeric' | 'text'
  min?: number
  max?: number
  minLength?: number
  maxLength?: number
  placeholder?: string
}

/** A labelled input with its hint and its error, tied together for screen readers. */
export function TextField({ label, value, onValue, hint, error, type, ...rest }: InputProps) {
  const id = useId()
  const describedBy = [hint === undefined ? '' : `${id}-hint`, error ? `${id}-error` : '']
    .filter((s) => s !== '')
    .join(' ')
  return (
    <div class={`field ${error ? 'field-invalid' : ''}`}>
      <label for={id}>{label}</label>
      <input
        {...rest}
        // Preact types each input type's attributes apart; these three share all of ours.
        type={(type ?? 'text') as 'text'}
        id={id}
        value={value}
        onInput={(event) => onValue((event.currentTarget as HTMLInputElement).value)}
        aria-invalid={error ? 'true' : undefined}
        aria-describedby={describedBy === '' ? undefined : describedBy}
      />
      {hint === undefined ? null : (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error ? (
        <p class="field-error" id={`${id}-error`}>
          {error}
        </p>
      ) : null}
    </div>
  )
}

export function SelectField({
  label,
  value,
  onValue,
  options,
  hint,
  error,
  required,
}: {
  label: string
  value: string
  onValue: (value: string) => void
  options: Array<{ value: string; label: string }>
  hint?: ComponentChildren
  error?: string | null
  required?: boolean
}) {
  const id = useId()
  const describedBy = [hint === undefined ? '' : `${id}-hint`, error ? `${id}-error` : '']
    .filter((s) => s !== '')
    .join(' ')
  return (
    <div class={`field ${error ? 'field-invalid' : ''}`}>
      <label for={id}>{label}</label>
      <select
        id={id}
        value={value}
        required={required}
        onChange={(event) => onValue((event.currentTarget as HTMLSelectElement).value)}
        aria-invalid={error ? 'true' : undefined}
        aria-describedby={describedBy === '' ? undefined : describedBy}
      >
        {options.map((option) => (
          <option key={option.value} value={option.value}>
            {option.label}
          </option>
        ))}
      </select>
      {hint === undefined ? null : (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error ? (
        <p class="field-error" id={`${id}-error`}>
          {error}
        </p>
      ) : null}
    </div>
  )
}

export function Checkbox({
  label,
  checked,
  onChecked,
  switchRole,
}: {
  label: string
  checked: boolean
  onChecked: (checked: boolean) => void
  switchRole?: boolean
}) {
  const id = useId()
  return (
    <div class="checkbox">
      <input
        type="checkbox"
        id={id}
        role={switchRole === true ? 'switch' : undefined}
        checked={checked}
        onChange={(event) => onChecked((event.currentTarget as HTMLInputElement).checked)}
      />
      <label for={id}>{label}</label>
    </div>
  )
}

/** A whole number from a form field, or null when it is not one. */
export function wholeNumber(text: string): number | null {
  const trimmed = text.trim()
  if (!/^\d{1,9}$/.test(trimmed)) return null
  return Number(trimmed)
}

// ------------------------------------------------------------------ display

const statusTone: Record<string, string> = {
  running: 'good',
  normal: 'good',
  online: 'good',
  public: 'good',
  pending: 'busy',
  deleting: 'busy',
  starting: 'busy',
  stopping: 'busy',
  moving: 'busy',
  stopped: 'idle',
  private: 'idle',
  none: 'idle',
  drained: 'warn',
  disabled: 'warn',
  offline: 'bad',
  error: 'bad',
}

export function StatusBadge({ status, label }: { status: string; label?: string }) {
  return <span class={`badge badge-${statusTone[status] ?? 'idle'}`}>{label ?? status}</span>
}

/** How much of a quota is used: a bar (decorative) and the numbers as text. */
export function UsageMeter({
  label,
  used,
  total,
  unit,
}: {
  label: string
  used: number
  total: number
  unit: string
}) {
  const fraction = total <= 0 ? (used > 0 ? 1 : 0) : Math.min(1, used / total)
  const tone = fraction >= 1 ? 'full' : fraction >= 0.8 ? 'high' : 'ok'
  const suffix = unit === '' ? '' : ` ${unit}`
  return (
    <div class="usage">
      <div class="usage-label">
        <span>{label}</span>
        <span class="usage-numbers">
          {used} of {total}
          {suffix}
        </span>
      </div>
      <div class={`usage-bar usage-${tone}`} aria-hidden="true">
        <span class="usage-fill" style={{ width: `${Math.round(fraction * 100)}%` }} />
      </div>
    </div>
  )
}

/** The page's title: focused after each navigation so screen readers start there. */
export function PageHeader({
  title,
  subtitle,
  actions,
}: {
  title: ComponentChildren
  subtitle?: ComponentChildren
  actions?: ComponentChildren
}) {
  const ref = useRef<HTMLHeadingElement>(null)
  useEffect(() => {
    ref.current?.focus({ preventScroll: true })
  }, [])
  return (
    <header class="page-header">
      <div>
        <h1 tabIndex={-1} ref={ref}>
          {title}
        </h1>
        {subtitle === undefined ? null : <p class="subtitle">{subtitle}</p>}
      </div>
      {actions === undefined ? null : <div class="page-actions">{actions}</div>}
    </header>
  )
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> Loading {what}…
    </p>
  )
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

export function formatTime(ms: number): string {
  if (ms <= 0) return '—'
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
}

/** The end of a long id (PeerIds, image hashes), enough to tell them apart. */
export function shortId(id: string, chars = 8): string {
  return id.length <= chars ? id : `…${id.slice(-chars)}`
}

// ------------------------------------------------------------------ data

export interface Loaded<T> {
  data: T | null
  error: string | null
  loading: boolean
  reload: () => Promise<void>
}

/**
 * Loads `fetch()` now and again every `intervalMs(data)` ms (null: no
 * polling) while the page is visible; the interval follows the data, so a
 * page polls fast only while something converges.
 */
export function useLoad<T>(
  fetch: () => Promise<T>,
  deps: ReadonlyArray<unknown>,
  intervalMs?: (data: T | null) => number | null,
): Loaded<T> {
  const [data, setData] = useState<T | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [loading, setLoading] = useState(true)
  const generation = useRef(0)
  const dataRef = useRef<T | null>(null)
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null)
  const intervalRef = useRef(intervalMs)
  intervalRef.current = intervalMs

  const reload = useCallback(async () => {
    const mine = ++generation.current
    if (timer.current !== null) clearTimeout(timer.current)
    timer.current = null
    try {
      const value = await fetch()
      if (mine !== generation.current) return
      dataRef.current = value
      setData(value)
      setError(null)
    } catch (failure) {
      if (mine !== generation.current) return
      setError(messageOf(failure))
    } finally {
      if (mine === generation.current) {
        setLoading(false)
        const next = intervalRef.current?.(dataRef.current) ?? null
        if (next !== null) timer.current = setTimeout(() => void reloadWhenVisible(), next)
      }
    }
  }, deps)

  const reloadWhenVisible = useCallback(async () => {
    if (document.hidden) {
      // Hidden tabs do not poll; the visibilitychange listener resumes.
      timer.current = null
      return
    }
    await reload()
  }, [reload])

  useEffect(() => {
    setLoading(true)
    void reload()
    const onVisible = () => {
      if (!document.hidden && timer.current === null && intervalRef.current?.(dataRef.current) != null)
        void reload()
    }
    document.addEventListener('visibilitychange', onVisible)
    return () => {
      generation.current++
      if (timer.current !== null) clearTimeout(timer.current)
      timer.current = null
      document.removeEventListener('visibilitychange', onVisible)
    }
  }, [reload])

  return { data, error, loading, reload }
}
