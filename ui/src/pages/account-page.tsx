// My account: who I am, change my password, log out everywhere.

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import { useApp } from '../app-context.ts'
import { ActionStatus, Button, PageHeader, TextField, useAction } from '../components.tsx'
import { passwordCharsMin } from '../types.ts'

export function AccountPage() {
  const { session, refreshSession } = useApp()
  const [oldPassword, setOldPassword] = useState('')
  const [newPassword, setNewPassword] = useState('')
  const [repeat, setRepeat] = useState('')
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const [logoutAction, runLogout] = useAction()

  const newError =
    newPassword.length >= passwordCharsMin ? null : `Use at least ${passwordCharsMin} characters.`
  const repeatError = repeat === newPassword ? null : 'The two new passwords differ.'

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (newError !== null || repeatError !== null) return
    void run('Changing the password…', async () => {
      await api.changePassword(oldPassword, newPassword)
      setOldPassword('')
      setNewPassword('')
      setRepeat('')
      setChecked(false)
      return 'Password changed; your other sessions have ended.'
    })
  }

  return (
    <>
      <PageHeader title="Account" subtitle={`${session.name}: ${session.role}, group ${session.group}.`} />
      <section class="card" aria-labelledby="password-heading">
        <h2 id="password-heading">Change my password</h2>
        <form class="stack narrow-form" onSubmit={submit} noValidate>
          <input type="text" autocomplete="username" value={session.name} hidden readOnly />
          <TextField
            label="Current password"
            type="password"
            value={oldPassword}
            onValue={setOldPassword}
            autocomplete="current-password"
            required
          />
          <TextField
            label="New password"
            type="password"
            value={newPassword}
            onValue={setNewPassword}
            autocomplete="new-password"
            error={checked ? newError : null}
            required
          />
          <TextField
            label="New password again"
            type="password"
            value={repeat}
            onValue={setRepeat}
            autocomplete="new-password"
            error={checked ? repeatError : null}
            required
          />
          <div class="form-actions">
            <Button type="submit" variant="primary" busy={action.busy}>
              Change password
            </Button>
          </div>
          <ActionStatus state={action} />
        </form>
      </section>
      <section class="card" aria-labelledby="sessions-heading">
        <h2 id="sessions-heading">Sessions</h2>
        <p class="muted">Log out on every browser and device where {session.name} is logged in.</p>
        <Button
          variant="secondary"
          busy={logoutAction.busy}
          onClick={() =>
            void runLogout('Logging out everywhere…', async () => {
              await api.logout(true)
              await refreshSession()
            })
          }
        >
          Log out everywhere
        </Button>
        <ActionStatus state={logoutAction} />
      </section>
    </>
  )
}
