// Images: mine (share, unshare, describe, delete) and the public ones of
// others; an admin also sees everyone's private images and can build
// docklet's own images (busybox for tests, Debian with Jupyter).

import { useState } from 'preact/hooks'
import { api } from '../api.ts'
import { useApp } from '../app-context.ts'
import {
  ActionStatus,
  Button,
  ConfirmButton,
  formatBytes,
  formatTime,
  Loading,
  Notice,
  PageHeader,
  SelectField,
  StatusBadge,
  shortId,
  TextField,
  useAction,
  useLoad,
} from '../components.tsx'
import type { Image, Session } from '../types.ts'

export function ImagesPage() {
  const { session, refreshSession } = useApp()
  const images = useLoad(() => api.images().then((answer) => answer.images), [])
  const afterChange = async () => {
    await Promise.all([images.reload(), refreshSession()])
  }
  const all = images.data ?? []
  const mine = all.filter((image) => image.owner === session.name)
  const shared = all.filter((image) => image.owner !== session.name && image.visibility === 'public')
  const others = all.filter((image) => image.owner !== session.name && image.visibility === 'private')

  return (
    <>
      <PageHeader
        title="Images"
        subtitle={`A vcluster starts from an image. You use ${session.usage.images} of ${session.quota.images} images.`}
      />
      {images.error === null ? null : <Notice kind="error">{images.error}</Notice>}
      {images.loading && images.data === null ? <Loading what="the images" /> : null}
      {images.data === null ? null : (
        <>
          <ImageTable
            title="My images"
            id="mine"
            images={mine}
            session={session}
            editable
            empty="You have no images. Save a vnode as an image on its vcluster's page."
            onChange={afterChange}
          />
          <ImageTable
            title="Public images"
            id="public"
            images={shared}
            session={session}
            editable={session.role === 'admin'}
            empty="No one else shares an image."
            onChange={afterChange}
          />
          {session.role === 'admin' ? (
            <>
              <ImageTable
                title="Private images of other users"
                id="others"
                images={others}
                session={session}
                editable
                empty="No other user has a private image."
                onChange={afterChange}
              />
              <BuildImage onChange={afterChange} />
            </>
          ) : null}
        </>
      )}
    </>
  )
}

function ImageTable({
  title,
  id,
  images,
  session,
  editable,
  empty,
  onChange,
}: {
  title: string
  id: string
  images: Image[]
  session: Session
  editable: boolean
  empty: string
  onChange: () => Promise<void>
}) {
  return (
    <section class="card" aria-labelledby={`${id}-heading`}>
      <h2 id={`${id}-heading`}>{title}</h2>
      {images.length === 0 ? (
        <p class="empty">{empty}</p>
      ) : (
        <table class="table responsive">
          <caption class="sr-only">{title}</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Owner</th>
              <th scope="col">Visibility</th>
              <th scope="col">Size</th>
              <th scope="col">Created</th>
              <th scope="col">Description</th>
              {editable ? (
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              ) : null}
            </tr>
          </thead>
          <tbody>
            {images.map((image) => (
              <ImageRow
                key={image.id}
                image={image}
                session={session}
                editable={editable}
                onChange={onChange}
              />
            ))}
          </tbody>
        </table>
      )}
    </section>
  )
}

function ImageRow({
  image,
  session,
  editable,
  onChange,
}: {
  image: Image
  session: Session
  editable: boolean
  onChange: () => Promise<void>
}) {
  const [editing, setEditing] = useState(false)
  const [description, setDescription] = useState(image.description)
  const [action, run] = useAction()
  const shared = image.visibility === 'public'

  const toggleShare = () =>
    run(shared ? `Making ${image.name} private…` : `Sharing ${image.name}…`, async () => {
      await (shared ? api.unshareImage(image.id) : api.shareImage(image.id))
      await onChange()
      return shared
        ? `${image.name} is private again.`
        : `${image.name} is public: every user can start vclusters from it.`
    })
  const saveDescription = (event: Event) => {
    event.preventDefault()
    void run('Saving the description…', async () => {
      await api.describeImage(image.id, description.trim())
      setEditing(false)
      await onChange()
      return 'Description saved.'
    })
  }
  const remove = () =>
    run(`Deleting ${image.name}…`, async () => {
      await api.deleteImage(image.id)
      await onChange()
    })

  return (
    <>
      <tr aria-label={`image ${image.name}`}>
        <th scope="row" data-label="Name">
          <span title={image.id}>{image.name}</span>
          <span class="muted small block nowrap">{shortId(image.id)}</span>
        </th>
        <td data-label="Owner">{image.owner === session.name ? 'me' : image.owner}</td>
        <td data-label="Visibility">
          <StatusBadge status={image.visibility} />
        </td>
        <td data-label="Size" class="nowrap">
          {formatBytes(image.sizeBytes)}
        </td>
        <td data-label="Created">{formatTime(image.createdAt)}</td>
        <td data-label="Description">
          {image.description === '' ? <span class="muted">—</span> : image.description}
        </td>
        {editable ? (
          <td data-label="Actions" class="row-actions">
            <Button variant="secondary" busy={action.busy} onClick={() => void toggleShare()}>
              {shared ? 'Unshare' : 'Share'}
              <span class="sr-only"> {image.name}</span>
            </Button>
            <Button
              variant="quiet"
              aria-expanded={editing ? 'true' : 'false'}
              onClick={() => {
                setDescription(image.description)
                setEditing(!editing)
              }}
            >
              Edit description<span class="sr-only"> of {image.name}</span>
            </Button>
            <ConfirmButton
              label="Delete"
              context={image.name}
              question={`Delete the image ${image.name}?`}
              confirmLabel="Delete for good"
              busy={action.busy}
              onConfirm={() => void remove()}
            />
          </td>
        ) : null}
      </tr>
      {editing || action.message !== null || action.error !== null ? (
        <tr class="row-detail">
          <td colSpan={editable ? 7 : 6}>
            {editing ? (
              <form
                class="inline-form"
                onSubmit={saveDescription}
                aria-label={`Description of ${image.name}`}
              >
                <TextField
                  label="Description"
                  value={description}
                  onValue={setDescription}
                  maxLength={1000}
                />
                <div class="form-actions">
                  <Button type="submit" variant="primary" busy={action.busy}>
                    Save description
                  </Button>
                  <Button variant="quiet" onClick={() => setEditing(false)}>
                    Cancel
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

function BuildImage({ onChange }: { onChange: () => Promise<void> }) {
  const [kind, setKind] = useState<'busybox' | 'debian'>('busybox')
  const [action, run] = useAction()
  const build = (event: Event) => {
    event.preventDefault()
    void run(
      kind === 'busybox'
        ? 'Building the busybox image (seconds)…'
        : 'Building the Debian image with Jupyter (several minutes)…',
      async () => {
        const { id } = await api.buildImage(kind)
        await onChange()
        return `Built the ${kind} image ${shortId(id, 12)}; it is public.`
      },
    )
  }
  return (
    <section class="card" aria-labelledby="build-heading">
      <h2 id="build-heading">Build an image</h2>
      <p class="muted">
        docklet builds two images itself, on this node; both become public images of the admin.
      </p>
      <form class="inline-form" onSubmit={build}>
        <SelectField
          label="Image"
          value={kind}
          onValue={(value) => setKind(value === 'debian' ? 'debian' : 'busybox')}
          options={[
            { value: 'busybox', label: 'busybox: tiny, for tests' },
            { value: 'debian', label: 'debian: Python and Jupyter, the default workspace' },
          ]}
        />
        <div class="form-actions">
          <Button type="submit" variant="secondary" busy={action.busy}>
            Build
          </Button>
        </div>
      </form>
      <ActionStatus state={action} />
    </section>
  )
}
