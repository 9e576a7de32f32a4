// Self-registration, while an admin has opened it: the account then waits
// for an admin's approval (like the original docklet).

import { useEffect, useState } from 'preact/hooks'
import { api, messageOf } from '../api.ts'
import { ActionStatus, Button, Loading, Notice, PageHeader, TextField, useAction } from '../components.tsx'
import { Link } from '../router.tsx'
import { namePattern, nameRule, passwordCharsMin } from '../types.ts'

export function RegisterPage() {
  const [open, setOpen] = useState<boolean | null>(null)
  const [loadError, setLoadError] = useState<string | null>(null)
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const [repeat, setRepeat] = useState('')
  const [checked, setChecked] = useState(false)
  const [registered, setRegistered] = useState<string | null>(null)
  const [action, run] = useAction()

  useEffect(() => {
    api
      .settings()
      .then((settings) => setOpen(settings.registration.open))
      .catch((error) => setLoadError(messageOf(error)))
  }, [])

  const nameError = namePattern.test(name.trim()) ? null : `Use ${nameRule}.`
  const passwordError =
    password.length >= passwordCharsMin ? null : `Use at least ${passwordCharsMin} characters.`
  const repeatError = repeat === password ? null : 'The two passwords differ.'

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (nameError !== null || passwordError !== null || repeatError !== null) return
    void run('Registering…', async () => {
      const result = await api.register(name.trim(), password)
      setRegistered(result.name)
    })
  }

  let body = null
  if (loadError !== null) body = <Notice kind="error">{loadError}</Notice>
  else if (open === null) body = <Loading what="the settings" />
  else if (registered !== null)
    body = (
      <Notice kind="success">
        The account {registered} is registered and waits for an admin's approval. You can log in once it is
        approved.
      </Notice>
    )
  else if (!open)
    body = (
      <Notice kind="info">Self-registration is closed; ask an admin of this cluster for an account.</Notice>
    )
  else
    body = (
      <form onSubmit={submit} class="stack" noValidate>
        <TextField
          label="User name"
          value={name}
          onValue={setName}
          autocomplete="username"
          hint={`Use ${nameRule}.`}
          error={checked ? nameError : null}
          required
        />
        <TextField
          label="Password"
          type="password"
          value={password}
          onValue={setPassword}
          autocomplete="new-password"
          error={checked ? passwordError : null}
          required
        />
        <TextField
          label="Password again"
          type="password"
          value={repeat}
          onValue={setRepeat}
          autocomplete="new-password"
          error={checked ? repeatError : null}
          required
        />
        <div class="form-actions">
          <Button type="submit" variant="primary" busy={action.busy}>
            Register
          </Button>
        </div>
        <ActionStatus state={action} />
      </form>
    )

  return (
    <section class="card auth-card">
      <PageHeader title="Register" />
      {body}
      <p class="muted">
        <Link href="/login">Back to log in</Link>
      </p>
    </section>
  )
}
