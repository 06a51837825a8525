//! The Windows user IIS signed in. With Windows Authentication on and `forwardWindowsAuthToken`
//! (the default), the ASP.NET Core Module duplicates the user's access token into our process
//! and sends the handle's value, in hex, as `MS-ASPNETCORE-WINAUTHTOKEN` (see docs/ANCM.md).
//! We read the account and its groups from it and close it, on every request that carries one:
//! the handle is ours now, and one left open is a kernel object leaked per request.
//!
//! Only believed on a request that carried the module's pairing token (the module strips any
//! `MS-ASPNETCORE-*` header a client sends, and `iis::enforce` refuses requests without the
//! token): whoever else sends it is ignored, and logged.

/// The header the module sends the handle in.
pub const HEADER: &str = "ms-aspnetcore-winauthtoken";

/// The account (`DOMAIN\name`) and the names of its groups, or why not. The handle is closed
/// whatever happens.
#[cfg(windows)]
pub fn account(hex: &str) -> Result<(String, Vec<String>), String> {
    let value = usize::from_str_radix(hex.trim(), 16)
        .map_err(|_| format!("{HEADER} is not a handle in hex"))?;
    let token = sys::Owned(value as windows_sys::Win32::Foundation::HANDLE);
    let user = token.user()?;
    let groups = token.groups();
    Ok((user, groups))
}

/// Not a Windows build: there is no handle to read, and none was duplicated into us.
#[cfg(not(windows))]
pub fn account(_hex: &str) -> Result<(String, Vec<String>), String> {
    Err("Windows sign-in is read only by the Windows build".into())
}

#[cfg(windows)]
mod sys {
    use windows_sys::Win32::{
        Foundation::{CloseHandle, ERROR_INSUFFICIENT_BUFFER, HANDLE},
        Security::{
            GetTokenInformation, LookupAccountSidW, TokenGroups, TokenUser, PSID, SID_NAME_USE,
            TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_USER,
        },
        System::SystemServices::SE_GROUP_USE_FOR_DENY_ONLY,
    };

    /// A token handle that is closed when dropped, on every path.
    pub struct Owned(pub HANDLE);

    impl Drop for Owned {
        fn drop(&mut self) {
            // SAFETY: the module gave this handle to us alone; it is closed once, here.
            unsafe { CloseHandle(self.0) };
        }
    }

    impl Owned {
        /// `GetTokenInformation` into a buffer of the size it asks for. `u64`s so the
        /// structures read from it are aligned.
        fn information(&self, class: TOKEN_INFORMATION_CLASS) -> Result<Vec<u64>, String> {
            let mut needed = 0u32;
            // SAFETY: a null buffer of length 0 only asks for the size.
            unsafe { GetTokenInformation(self.0, class, std::ptr::null_mut(), 0, &mut needed) };
            let error = std::io::Error::last_os_error();
            if needed == 0 || error.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) {
                return Err(format!(
                    "the forwarded Windows token cannot be read: {error}"
                ));
            }
            let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
            // SAFETY: `buf` holds `needed` bytes.
            let ok = unsafe {
                GetTokenInformation(self.0, class, buf.as_mut_ptr().cast(), needed, &mut needed)
            };
            if ok == 0 {
                let error = std::io::Error::last_os_error();
                return Err(format!(
                    "the forwarded Windows token cannot be read: {error}"
                ));
            }
            Ok(buf)
        }

        pub fn user(&self) -> Result<String, String> {
            let buf = self.information(TokenUser)?;
            // SAFETY: GetTokenInformation(TokenUser) wrote a TOKEN_USER at the buffer's start.
            let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
            name_of(user.User.Sid).ok_or_else(|| "the signed-in account has no name".into())
        }

        /// The groups that grant access (not the deny-only ones), by name; a group whose name
        /// cannot be looked up (a SID from a trust that is gone) is left out.
        pub fn groups(&self) -> Vec<String> {
            let Ok(buf) = self.information(TokenGroups) else {
                return Vec::new();
            };
            // SAFETY: GetTokenInformation(TokenGroups) wrote a TOKEN_GROUPS followed by its
            // GroupCount entries.
            let groups = unsafe {
                let list = &*(buf.as_ptr() as *const TOKEN_GROUPS);
                std::slice::from_raw_parts(list.Groups.as_ptr(), list.GroupCount as usize)
            };
            groups
                .iter()
                .filter(|g| g.Attributes & SE_GROUP_USE_FOR_DENY_ONLY as u32 == 0)
                .filter_map(|g| name_of(g.Sid))
                .collect()
        }
    }

    /// `DOMAIN\name` of a SID (just `name` when it has no domain).
    fn name_of(sid: PSID) -> Option<String> {
        let mut name = [0u16; 256];
        let mut domain = [0u16; 256];
        let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: both buffers are as long as the lengths passed; the SID comes from the token.
        let ok = unsafe {
            LookupAccountSidW(
                std::ptr::null(),
                sid,
                name.as_mut_ptr(),
                &mut name_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if ok == 0 {
            return None;
        }
        let name = String::from_utf16_lossy(&name[..name_len as usize]);
        let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
        Some(if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        })
    }
}
