package hsm

/*
#include <stdlib.h>
#include <string.h>

// The PKCS#11 structures below carry pointers. miekg/pkcs11 copies a
// []byte parameter or attribute value into C memory as it is, and cgo
// forbids Go pointers inside it, so what they point at is allocated here in
// C and the structures are serialized with C's own layout.
typedef struct { unsigned char *pData; unsigned long ulLen; } cachet_derivation_string;
typedef struct { unsigned long type; void *pValue; unsigned long ulValueLen; } cachet_attribute;
*/
import "C"

import (
	"unsafe"

	"github.com/miekg/pkcs11"
)

// cMem owns C allocations for one PKCS#11 call; free zeroes and releases them.
type cMem struct {
	ptrs  []unsafe.Pointer
	sizes []int
}

func (m *cMem) copy(b []byte) unsafe.Pointer {
	n := max(len(b), 1)
	p := C.malloc(C.size_t(n))
	if len(b) > 0 {
		C.memcpy(p, unsafe.Pointer(&b[0]), C.size_t(len(b)))
	}
	m.ptrs, m.sizes = append(m.ptrs, p), append(m.sizes, n)
	return p
}

func (m *cMem) free() {
	for i, p := range m.ptrs {
		C.memset(p, 0, C.size_t(m.sizes[i]))
		C.free(p)
	}
	m.ptrs, m.sizes = nil, nil
}

// derivationString is the CK_KEY_DERIVATION_STRING_DATA parameter of
// CKM_AES_ECB_ENCRYPT_DATA (Current Mechanisms v2.40 section 2.15.5) over
// data, which m holds until freed.
func (m *cMem) derivationString(data []byte) []byte {
	s := C.cachet_derivation_string{pData: (*C.uchar)(m.copy(data)), ulLen: C.ulong(len(data))}
	return C.GoBytes(unsafe.Pointer(&s), C.int(unsafe.Sizeof(s)))
}

// attributeArray is the value of an array attribute such as
// CKA_UNWRAP_TEMPLATE: CK_ATTRIBUTEs whose values m holds until freed.
// Only bool and []byte values are needed here.
func (m *cMem) attributeArray(attrs []*pkcs11.Attribute) []byte {
	arr := make([]C.cachet_attribute, len(attrs))
	for i, a := range attrs {
		arr[i] = C.cachet_attribute{_type: C.ulong(a.Type), pValue: m.copy(a.Value), ulValueLen: C.ulong(len(a.Value))}
	}
	if len(arr) == 0 {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(&arr[0]), C.int(uintptr(len(arr))*unsafe.Sizeof(arr[0])))
}

// mechanismList is the value of CKA_ALLOWED_MECHANISMS: CK_MECHANISM_TYPEs
// in the platform's byte order and size.
func mechanismList(mechs ...uint) []byte {
	arr := make([]C.ulong, len(mechs))
	for i, mech := range mechs {
		arr[i] = C.ulong(mech)
	}
	return C.GoBytes(unsafe.Pointer(&arr[0]), C.int(uintptr(len(arr))*unsafe.Sizeof(arr[0])))
}
