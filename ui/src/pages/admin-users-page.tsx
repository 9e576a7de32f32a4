// Admin: users. Add one; change role, group or status; approve a pending
// registration; disable; set a new password.

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import { useApp } from '../app-context.ts'
import {
  ActionStatus,
  Button,
  formatTime,
  Loading,
  Notice,
  PageHeader,
  SelectField,
  StatusBadge,
  TextField,
  useAction,
  useLoad,
} from '../components.tsx'
import {
  type Group,
  namePattern,
  nameRule,
  passwordCharsMin,
  type Role,
  type User,
  type UserStatus,
} from '../types.ts'

export function AdminUsersPage() {
  const users = useLoad(() => api.users().then((answer) => answer.users), [])
  const groups = useLoad(() => api.groups().then((answer) => answer.groups), [])
  const pending = (users.data ?? []).filter((user) => user.status === 'pending')
  return (
    <>
      <PageHeader
        title="Users"
        subtitle="Who may log in, with which role and group (the group sets the quota)."
      />
      {pending.length === 0 ? null : (
        <Notice kind="info">
          {pending.length === 1 ? '1 registration waits' : `${pending.length} registrations wait`} for
          approval: {pending.map((user) => user.name).join(', ')}.
        </Notice>
      )}
      <AddUser groups={groups.data ?? []} onAdded={users.reload} />
      <section class="card" aria-labelledby="users-heading">
        <h2 id="users-heading">All users</h2>
        {users.error === null ? null : <Notice kind="error">{users.error}</Notice>}
        {users.data === null ? (
          users.error === null ? (
            <Loading what="the users" />
          ) : null
        ) : (
          <table class="table responsive">
            <caption class="sr-only">Users</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Group</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.data.map((user) => (
                <UserRow key={user.name} user={user} groups={groups.data ?? []} onChange={users.reload} />
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  )
}

function groupOptions(groups: Group[], current: string) {
  const names = groups.map((group) => group.name)
  if (!names.includes(current)) names.unshift(current)
  return names.map((name) => ({ value: name, label: name }))
}

function AddUser({ groups, onAdded }: { groups: Group[]; onAdded: () => Promise<void> }) {
  const [name, setName] = useState('')
  const [password, setPassword] = useState('')
  const [role, setRole] = useState<Role>('user')
  const [group, setGroup] = useState('')
  const [checked, setChecked] = useState(false)
  const [action, run] = useAction()
  const nameError = namePattern.test(name.trim()) ? null : `Use ${nameRule}.`
  const passwordError =
    password.length >= passwordCharsMin ? null : `Use at least ${passwordCharsMin} characters.`

  const submit = (event: Event) => {
    event.preventDefault()
    setChecked(true)
    if (nameError !== null || passwordError !== null) return
    const user = name.trim()
    void run(`Adding ${user}…`, async () => {
      const added = await api.addUser({ name: user, password, role, ...(group === '' ? {} : { group }) })
      setName('')
      setPassword('')
      setChecked(false)
      await onAdded()
      return `Added ${added.name} (${added.role}, group ${added.group}). Give them the password; they can change it on their Account page.`
    })
  }
  return (
    <section class="card" aria-labelledby="add-user-heading">
      <h2 id="add-user-heading">Add a user</h2>
      <form class="inline-form" onSubmit={submit} noValidate>
        <TextField
          label="User name"
          value={name}
          onValue={setName}
          error={checked ? nameError : null}
          autocomplete="off"
          autoCapitalize="none"
          spellcheck={false}
        />
        <TextField
          label="Password"
          type="password"
          value={password}
          onValue={setPassword}
          error={checked ? passwordError : null}
          autocomplete="new-password"
        />
        <SelectField
          label="Role"
          value={role}
          onValue={(value) => setRole(value === 'admin' ? 'admin' : 'user')}
          options={[
            { value: 'user', label: 'user' },
            { value: 'admin', label: 'admin' },
          ]}
        />
        <SelectField
          label="Group"
          value={group}
          onValue={setGroup}
          options={[
            { value: '', label: 'the one named like the role' },
            ...groups.map((g) => ({ value: g.name, label: g.name })),
          ]}
        />
        <div class="form-actions">
          <Button type="submit" variant="primary" busy={action.busy}>
            Add user
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}

function UserRow({ user, groups, onChange }: { user: User; groups: Group[]; onChange: () => Promise<void> }) {
  const { session } = useApp()
  const [role, setRole] = useState<Role>(user.role)
  const [group, setGroup] = useState(user.group)
  const [status, setStatus] = useState<UserStatus>(user.status)
  const [resetting, setResetting] = useState(false)
  const [password, setPassword] = useState('')
  const [action, run] = useAction()
  const changed = role !== user.role || group !== user.group || status !== user.status
  const self = user.name === session.name

  const save = () =>
    run(`Saving ${user.name}…`, async () => {
      const body = {
        ...(role === user.role ? {} : { role }),
        ...(group === user.group ? {} : { group }),
        ...(status === user.status ? {} : { status }),
      }
      await api.modifyUser(user.name, body)
      await onChange()
      return `Saved ${user.name}.`
    })
  const approve = () =>
    run(`Approving ${user.name}…`, async () => {
      await api.modifyUser(user.name, { status: 'normal' })
      setStatus('normal')
      await onChange()
      return `${user.name} can log in now.`
    })
  const disable = () =>
    run(`Disabling ${user.name}…`, async () => {
      await api.disableUser(user.name)
      setStatus('disabled')
      await onChange()
      return `${user.name} is disabled; their sessions ended, their vclusters stay.`
    })
  const resetPassword = (event: Event) => {
    event.preventDefault()
    if (password.length < passwordCharsMin) return
    void run(`Setting a new password for ${user.name}…`, async () => {
      await api.modifyUser(user.name, { password })
      setPassword('')
      setResetting(false)
      return `New password set; ${user.name}'s sessions ended and any lockout is lifted.`
    })
  }

  return (
    <>
      <tr aria-label={`user ${user.name}`}>
        <th scope="row" data-label="Name">
          {user.name}
          {self ? <span class="muted small"> (me)</span> : null}
        </th>
        <td data-label="Role">
          <SelectField
            label={`Role of ${user.name}`}
            value={role}
            onValue={(value) => setRole(value === 'admin' ? 'admin' : 'user')}
            options={[
              { value: 'user', label: 'user' },
              { value: 'admin', label: 'admin' },
            ]}
          />
        </td>
        <td data-label="Group">
          <SelectField
            label={`Group of ${user.name}`}
            value={group}
            onValue={setGroup}
            options={groupOptions(groups, user.group)}
          />
        </td>
        <td data-label="Status">
          <StatusBadge status={user.status} />
          <SelectField
            label={`Status of ${user.name}`}
            value={status}
            onValue={(value) => setStatus(value as UserStatus)}
            options={[
              { value: 'normal', label: 'normal' },
              { value: 'pending', label: 'pending' },
              { value: 'disabled', label: 'disabled' },
            ]}
          />
        </td>
        <td data-label="Created">{formatTime(user.createdAt)}</td>
        <td data-label="Actions" class="row-actions">
          {user.status === 'pending' ? (
            <Button variant="primary" busy={action.busy} onClick={() => void approve()}>
              Approve<span class="sr-only"> {user.name}</span>
            </Button>
          ) : null}
          <Button variant="secondary" busy={action.busy} disabled={!changed} onClick={() => void save()}>
            Save<span class="sr-only"> {user.name}</span>
          </Button>
          <Button
            variant="quiet"
            aria-expanded={resetting ? 'true' : 'false'}
            onClick={() => setResetting(!resetting)}
          >
            New password<span class="sr-only"> for {user.name}</span>
          </Button>
          {user.status === 'disabled' || self ? null : (
            <Button variant="danger" busy={action.busy} onClick={() => void disable()}>
              Disable<span class="sr-only"> {user.name}</span>
            </Button>
          )}
        </td>
      </tr>
      {resetting || action.message !== null || action.error !== null ? (
        <tr class="row-detail">
          <td colSpan={6}>
            {resetting ? (
              <form class="inline-form" onSubmit={resetPassword} aria-label={`New password for ${user.name}`}>
                <TextField
                  label={`New password for ${user.name}`}
                  type="password"
                  value={password}
                  onValue={setPassword}
                  autocomplete="new-password"
                  hint={`At least ${passwordCharsMin} characters.`}
                  minLength={passwordCharsMin}
                  required
                />
                <div class="form-actions">
                  <Button type="submit" variant="primary" busy={action.busy}>
                    Set password
                  </Button>
                </div>
              </form>
            ) : null}
            <ActionStatus state={action} />
          </td>
        </tr>
      ) : null}
    </>
  )
}
